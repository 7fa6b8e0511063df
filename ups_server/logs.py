"""structlog set-up and the per-request log line (request id, workitem UID, outcome)."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def configure(json: bool = True, level: str = "info", file: str | None = None) -> None:
    """Log lines to stdout, or appended to ``file`` (``aiw demo`` keeps its screen for
    people and its log lines in a file)."""
    lvl = logging.getLevelName(level.upper())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer(serializer=lambda o, **_: orjson.dumps(o).decode()))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl if isinstance(lvl, int) else logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(open(file, "a", buffering=1) if file else sys.stdout),
        cache_logger_on_first_use=True,
    )


log = structlog.get_logger("aiw.server")


class RequestLogMiddleware:
    """One log event per request: method, path, status, duration, request id, and the
    workitem UID and DIMSE outcome the route put in ``scope["state"]``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            st = scope["state"]
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.perf_counter() - start) * 1000, 2), request_id=rid,
                     workitem=st.get("workitem"), outcome=st.get("outcome"))
