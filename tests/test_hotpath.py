"""The hot-route dispatcher (``ups_server.hotpath``) answers exactly as Starlette's stack
does: the same status, headers, body and log line for the same requests, refusals and
crashes included, and it only takes a request Starlette's router would give the same
endpoint."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Match

from tests.factory import progress, state, workitem
from tests.servers import RedisProcess
from ups_server import logs
from ups_server.app import create_app
from ups_server.hotpath import hot_route
from ups_server.settings import ServerSettings

TUID = "2.25.777"
UID = "2.25.1001"
DT = re.compile(rb'("00404010":\{"Value":\[")[^"]*(")')  # the modification time differs by the clock


async def _call(app: Starlette, method: str, path: str, body: bytes = b"", headers: tuple[tuple[bytes, bytes], ...] = (),
                *, starlette: bool, root_path: str = "") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request through the app (``starlette``: through Starlette's own stack, never the
    dispatcher)."""
    p, _, qs = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "server": ("testserver", 80), "client": ("127.0.0.1", 5000), "scheme": "http", "method": method,
             "root_path": root_path, "path": root_path + p, "raw_path": (root_path + p).encode(),
             "query_string": qs.encode(), "state": {},
             "headers": [(b"host", b"testserver"), (b"x-request-id", b"rid-1"), *headers]}
    if body and not any(k == b"content-length" for k, _ in headers):
        scope["headers"].append((b"content-length", str(len(body)).encode()))
    chunks = [body[:5], body[5:]] if len(body) > 5 else [body]  # a body in two messages

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    out: dict[str, Any] = {"body": b""}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"], out["headers"] = msg["status"], list(msg["headers"])
        else:
            out["body"] += msg.get("body", b"")

    await (Starlette.__call__ if starlette else type(app).__call__)(app, scope, receive, send)
    return out["status"], out["headers"], DT.sub(rb"\1T\2", out["body"])


JSON = ((b"content-type", b"application/dicom+json"),)
REQUESTS: list[tuple[str, str, bytes, tuple[tuple[bytes, bytes], ...]]] = [
    ("POST", f"/workitems?workitem={UID}", orjson.dumps(workitem()), JSON),
    ("POST", f"/workitems?workitem={UID}", orjson.dumps(workitem()), JSON),  # exists: 409
    ("POST", "/workitems?workitem=2.25.1002", orjson.dumps({**workitem(), "00404010": {"vr": "DT"}}), JSON),  # B300
    ("POST", "/workitems", b'{"00741000": {"vr": "XX"}}', JSON),
    ("POST", "/workitems", b"{not json", JSON),
    ("POST", "/workitems", b"", JSON),
    ("POST", "/workitems", orjson.dumps(workitem()), ((b"content-type", b"text/plain"),)),  # 415
    ("POST", "/workitems", orjson.dumps(workitem()), ((b"content-type", b"application/json"), (b"content-length", b"99999"))),
    ("POST", "/workitems", b"x" * 7000, JSON),  # 413 while reading
    ("POST", "/workitems", orjson.dumps(workitem()), ((b"accept", b"text/html"),) + JSON),  # 406
    ("GET", f"/workitems/{UID}", b"", ()),
    ("GET", f"/workitems/{UID}?accept=text/html", b"", ()),
    ("GET", "/workitems/2.25.404", b"", ()),
    ("GET", "/workitems/not%20a%20uid", b"", ()),
    ("POST", f"/workitems/{UID}", orjson.dumps(progress(10)), JSON),  # not claimed
    ("PUT", f"/workitems/{UID}/state", orjson.dumps(state("IN PROGRESS", TUID)), JSON),
    ("PUT", f"/workitems/{UID}/state", orjson.dumps(state("IN PROGRESS", TUID)), JSON),  # already
    ("PUT", f"/workitems/{UID}/state", b'{"00741000": {"vr": "CS", "Value": ["DONE"]}}', JSON),
    ("POST", f"/workitems/{UID}?transaction-uid={TUID}", orjson.dumps(progress(20, "half")), JSON),
    ("POST", f"/workitems/{UID}?transaction-uid=2.25.9", orjson.dumps(progress(30)), JSON),
    ("POST", f"/workitems/{UID}?{TUID}", orjson.dumps({**progress(40), "00404010": {"vr": "DT", "Value": ["2026"]}}), JSON),
    ("GET", "/workitems?ProcedureStepState=IN%20PROGRESS", b"", ()),
    ("GET", "/workitems?limit=1", b"", ()),
    ("GET", "/workitems?PatientID=nobody", b"", ()),
    ("GET", "/workitems?limit=abc", b"", ()),
    ("GET", "/workitems?includefield=all&PatientID=PAT-0001", b"", ()),
    ("PUT", f"/workitems/{UID}/state", orjson.dumps(state("COMPLETED", TUID)), JSON),
    # not hot: Starlette serves these on both sides
    ("HEAD", f"/workitems/{UID}", b"", ()),
    ("DELETE", f"/workitems/{UID}", b"", ()),
    ("GET", "/workitems/", b"", ()),
    ("GET", f"/workitems/{UID}/state", b"", ()),
    ("PUT", f"/workitems/{UID}/state/AET1", orjson.dumps(state("CANCELED", TUID)), JSON),
    ("POST", f"/workitems/{UID}/cancelrequest", b"", ()),
    ("GET", "/nothing", b"", ()),
]


@pytest.mark.parametrize("prefix", ["", "/ups/rs"])
def test_dispatcher_answers_as_starlette_does(redis_proc: RedisProcess, prefix: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    lines: list[dict[str, Any]] = []

    async def run() -> None:
        apps = [create_app(ServerSettings(redis_url=redis_proc.url, key_prefix=f"hp{side}{len(prefix)}:",
                                          path_prefix=prefix, max_body_bytes=6000)) for side in "ab"]
        monkeypatch.setattr(logs, "request_line", lambda fields: lines.append(fields))  # after create_app's configure
        try:
            for method, path, body, headers in REQUESTS:
                answers = []
                for app, via_starlette in zip(apps, (False, True)):
                    lines.clear()
                    answer = await _call(app, method, prefix + path, body, headers, starlette=via_starlette)
                    assert len(lines) == 1
                    line = dict(lines[0])
                    line.pop("ms")
                    answers.append((answer, line))
                assert answers[0] == answers[1], (method, path)
                (status, head, _), line = answers[0]
                assert line["status"] == status and (b"x-request-id", b"rid-1") in head
            # a crash: the same 500, the same log line, and the exception reaches the server
            for app, via_starlette in zip(apps, (False, True)):
                async def boom(*_: Any) -> None:
                    raise RuntimeError("boom")
                app.state.workitems.retrieve = boom
                lines.clear()
                with pytest.raises(RuntimeError):
                    await _call(app, "GET", f"{prefix}/workitems/{UID}", starlette=via_starlette)
                assert lines[0]["status"] == 500
        finally:
            for app in apps:
                await app.state.redis.aclose()

    asyncio.run(run())


def test_dispatcher_serves_under_a_root_path(redis_proc: RedisProcess, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A proxy's ``root_path`` is taken off the path first, as Starlette's router does."""
    async def run() -> None:
        app = create_app(ServerSettings(redis_url=redis_proc.url, key_prefix="hproot:"))
        monkeypatch.setattr(logs, "request_line", lambda fields: None)
        try:
            fast = await _call(app, "GET", "/workitems/2.25.5", starlette=False, root_path="/proxy")
            slow = await _call(app, "GET", "/workitems/2.25.5", starlette=True, root_path="/proxy")
            assert fast == slow and fast[0] == 404
        finally:
            await app.state.redis.aclose()

    asyncio.run(run())


_APP = create_app(ServerSettings(path_prefix="/p", redis_url="redis://127.0.0.1:1/0"))
SEGMENTS = st.sampled_from(["", "p", "workitems", "state", "2.25.1", "x", "cancelrequest", "subscribers",
                            "AET", "\n", " ", "%2F", "workitemsx", "1.2.840.10008.5.1.4.34.5"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(SEGMENTS, max_size=6), st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
       st.booleans())
def test_dispatcher_takes_only_what_the_router_would_give_the_same_endpoint(segments: list[str], method: str,
                                                                           trailing: bool) -> None:
    path = "/" + "/".join(segments) + ("/" if trailing else "")
    found = hot_route(path, method, "/p/workitems")
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    chosen = None
    for route in _APP.router.routes:
        match, child = route.matches(scope)
        if match == Match.FULL:
            chosen = (child.get("endpoint"), child.get("path_params"))
            break
    if found is not None:
        assert chosen == found, path


def _old_check_accept(request: Any, transaction: str) -> None:
    """``routes._check_accept`` as it was, parsing every query."""
    from ups_server.routes import ACCEPTABLE
    from ups_server.workitems import UpsFailure
    accept = request.query_params.get("accept") or request.headers.get("accept")
    if not accept:
        return
    types = [t.split(";")[0].strip().lower() for t in accept.split(",")]
    if not any(t in ACCEPTABLE for t in types):
        raise UpsFailure(transaction, "not-acceptable", f"cannot answer with {accept!r}; this server sends application/dicom+json")


QUERY_PARTS = st.sampled_from(["accept", "Accept", "acc%65pt", "%61ccept", "accept+", "a", "=", "&", ";", "+", "%",
                               "text/html", "application/dicom+json", "*/*", ",", "limit=1", "x", "%2C"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(QUERY_PARTS, max_size=8), st.sampled_from([None, "text/html", "application/json", ""]))
def test_accept_check_reads_the_query_only_when_it_can_hold_accept(parts: list[str], header: str | None) -> None:
    from starlette.requests import Request
    from ups_server.routes import _check_accept
    qs = "".join(parts).encode()
    scope = {"type": "http", "query_string": qs, "headers": [] if header is None else [(b"accept", header.encode())]}
    outcomes = []
    for check in (_check_accept, _old_check_accept):
        try:
            check(Request(scope), "retrieve")
            outcomes.append(None)
        except Exception as exc:  # the UpsFailure and its wording
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1], qs
