"""Parsed Search queries, kept by their query string.

A performer's pull sends the same query again and again (SCHEDULED workitems of its codes,
one page size), and parsing it — the query string, each attribute name, each matcher's VR,
value and pattern — is about a tenth of a search's CPU. A parsed ``Query`` depends only on
the query string and the server's time zone, and nothing changes it after parsing (the
search reads it; projections and matching build their own sets), so the one parsed first is
answered again. A query that is refused (``QueryError``) is not kept: it is parsed, and
refused with the same words, every time. Bounded, because query strings are the client's
to choose.
"""

from __future__ import annotations

from datetime import timezone
from typing import Callable, Iterable

from upsrs.matching import Query, parse_query

Params = Callable[[], Iterable[tuple[str, str]]]


class QueryCache:
    """``parse_query`` of a query string, remembered (at most ``size`` strings)."""

    def __init__(self, tz: timezone, size: int = 1024):
        self.tz = tz
        self.size = size
        self._parsed: dict[bytes, Query] = {}

    def get(self, raw: bytes, params: Params) -> Query:
        """The query of the raw query string ``raw``; ``params`` gives its decoded
        (name, value) pairs, asked for only when ``raw`` is new."""
        query = self._parsed.get(raw)
        if query is None:
            query = parse_query(params(), self.tz)  # raises QueryError: nothing kept
            if len(self._parsed) >= self.size:
                self._parsed.clear()
            self._parsed[raw] = query
        return query
