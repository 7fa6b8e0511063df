"""DIMSE statuses of the UPS transactions with their HTTP status and exact Warning text,
from ``standard/statuses.txt``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from upsrs.tables import read_rows


@dataclass(frozen=True)
class HttpStatus:
    http: int
    warning: str


@cache
def _table() -> dict[tuple[str, str], HttpStatus]:
    return {(r[0], r[1]): HttpStatus(int(r[2]), r[3] if len(r) > 3 else "") for r in read_rows("statuses.txt")}


def lookup(transaction: str, status: str) -> HttpStatus:
    table = _table()
    found = table.get((transaction, status)) or table.get(("*", status))
    if found is None:
        raise LookupError(f"statuses.txt has no row for {transaction} {status}")
    return found


def warning_header(service: str, text: str) -> str:
    """``299 <service>: <text>`` (PS3.18 8.6, the value of one Warning header)."""
    return f"299 {service}: {text}"
