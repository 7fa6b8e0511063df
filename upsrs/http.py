"""The owned-or-borrowed httpx client every DICOMweb client of the project holds.

A client made here is closed with its owner; one passed in (shared by several clients, or
a test transport) is left to whoever made it. Clients share one TLS context per process
(``tls_context``): httpx otherwise builds one, loading the whole CA bundle, per client.
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import Mapping

import httpx


@cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process for every client: httpx otherwise builds one, loading
    the whole CA bundle, for each client it makes (~0.17 s), even for http:// URLs."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class HttpHolder:
    """Base of the async DICOMweb clients: ``async with Client(url) as c: ...``."""

    def __init__(self, *, http: httpx.AsyncClient | None = None, timeout: float = 30.0,
                 headers: Mapping[str, str] | None = None):
        self._own = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout, headers=dict(headers or {}), verify=tls_context())

    async def __aenter__(self):  # type: ignore[no-untyped-def]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()
