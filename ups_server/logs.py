"""structlog set-up and the per-request log line (request id, workitem UID, outcome)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def configure(json: bool = True, level: str = "info", file: str | None = None) -> None:
    """Log lines to stdout, or appended to ``file`` (``aiw demo`` keeps its screen for
    people and its log lines in a file)."""
    global request_line
    out: TextIO
    if file:
        out = open(file, "a")  # the request line flushes (below), structlog's own lines too
        atexit.register(out.flush)  # what the last turn of the loop wrote
    else:
        out = sys.stdout
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
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    if not json:
        request_line = _structlog_request_line
    elif (lvl if isinstance(lvl, int) else logging.INFO) > logging.INFO:
        request_line = _no_request_line
    else:
        request_line = _json_request_line(out)


log = structlog.get_logger("aiw.server")


def _structlog_request_line(fields: dict[str, Any]) -> None:
    log.info("request", **fields)


def _no_request_line(fields: dict[str, Any]) -> None:
    return None


def _json_request_line(out: Any) -> Callable[[dict[str, Any]], None]:
    """The per-request line as the structlog chain configured above writes it (the fields,
    event, context variables, level, ISO UTC timestamp; one JSON line), without the chain:
    the bound-logger call and its processors cost a few times the line itself, and every
    request writes one.

    The lines of the requests one turn of the event loop finishes are flushed together at
    the start of its next turn (``call_soon``), before it waits for the network again: one
    write system call per turn instead of one per request (~5 µs each, 2–3% of a create).
    A line is in the file within that turn, a millisecond at most under load; only a
    process killed inside it loses the lines of the requests it had just answered. Outside
    an event loop (another thread), a line is flushed at once."""
    lock = threading.Lock()
    get_context = structlog.contextvars.get_contextvars
    scheduled = False

    def flush() -> None:
        nonlocal scheduled
        with lock:
            scheduled = False
            out.flush()

    def line(fields: dict[str, Any]) -> None:
        nonlocal scheduled
        event = dict(fields)
        event["event"] = "request"
        for k, v in get_context().items():  # merge_contextvars: the call's own fields win
            event.setdefault(k, v)
        event["level"] = "info"
        event["timestamp"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        text = orjson.dumps(event).decode() + "\n"
        with lock:
            out.write(text)
            if scheduled:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                out.flush()
                return
            scheduled = True
        loop.call_soon(flush)

    return line


request_line: Callable[[dict[str, Any]], None] = _structlog_request_line
_ids = random.Random()  # request ids are labels, not secrets: no system call per request


def begin(scope: Scope) -> str:
    """The request id of a request (the client's ``X-Request-Id``, else a fresh one), kept
    in ``scope["state"]`` for the route; shared by the middleware below and the hot-route
    dispatcher (``ups_server.hotpath``), so both write the same line."""
    rid = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None) or f"{_ids.getrandbits(64):016x}"
    scope.setdefault("state", {})["request_id"] = rid
    return rid


def finish(scope: Scope, rid: str, status: int, start: float) -> None:
    """The request's one log line, with the workitem UID and DIMSE outcome the route put in
    ``scope["state"]``."""
    st = scope["state"]
    request_line({"method": scope["method"], "path": scope["path"], "status": status,
                  "ms": round((time.perf_counter() - start) * 1000, 2), "request_id": rid,
                  "workitem": st.get("workitem"), "outcome": st.get("outcome")})


class RequestLogMiddleware:
    """One log event per request: method, path, status, duration, request id, and the
    workitem UID and DIMSE outcome the route put in ``scope["state"]``."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = begin(scope)
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
            finish(scope, rid, status, start)
