"""The ceiling of event delivery: a bare ``websockets`` broadcast server, one process.

It does what the fan-out must do at the least: send the same message bytes to every
connected client at a steady rate. One asyncio process on uvloop (as ``aiw server`` runs),
the ``websockets`` library's asyncio server without compression (``aiw server`` turns
per-message deflate off too) and its ``broadcast()``, which writes one frame to every open
connection without waiting. Clients connect to ``/subscribers/{aet}`` like aiw's channel.

The messages are UPS State Reports built by the code aiw sends them with
(``upsrs.events.message`` over ``state_report``, serialised once per event with orjson, as
``ups_server.fanout.Fanout.render``): one new workitem UID per pair, SCHEDULED then
IN PROGRESS, as the create + claim pairs of the aiw phase. Each send is logged with the
``time.monotonic()`` taken just before the message is built; that is the ceiling's
"change", as the HTTP request's send time is aiw's.

Control, plain HTTP on the same port:
    GET /healthz                         {"connections": N}
    GET /start?at=T&rate=R&seconds=S     send R messages/s from monotonic time T for S s
    GET /log                             [[uid, state, send time], ...] of the last run

    python -m bench.broadcast --port 8098
"""

from __future__ import annotations

import argparse
import asyncio
import time
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response

from upsrs import events as ev
from upsrs.uids import new_uid

CLIENTS: set[ServerConnection] = set()
LOG: list[tuple[str, str, float]] = []
RUNNING: list[asyncio.Task] = []
_mid = 0


def render(uid: str, state: str) -> str:
    """The same bytes aiw sends for a State Report of a workitem created READY."""
    global _mid
    _mid = (_mid + 1) & 0xFFFF
    ds = {"00741000": {"vr": "CS", "Value": [state]}, "00404041": {"vr": "CS", "Value": ["READY"]}}
    return orjson.dumps(ev.message(uid, ev.STATE_REPORT, ev.state_report(ds), _mid)).decode()


async def run(at: float, rate: float, seconds: float) -> None:
    LOG.clear()
    n = int(rate * seconds)
    uid = ""
    for k in range(n):
        delay = at + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if k % 2 == 0:
            uid = new_uid()
        state = "SCHEDULED" if k % 2 == 0 else "IN PROGRESS"
        t = time.monotonic()
        broadcast(CLIENTS, render(uid, state))
        LOG.append((uid, state, t))


async def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CLIENTS.discard(ws)


def control(connection: ServerConnection, request: Request) -> Response | None:
    url = urlsplit(request.path)
    if url.path.startswith("/subscribers/"):
        return None  # a WebSocket handshake
    if url.path == "/healthz":
        body = {"connections": len(CLIENTS)}
    elif url.path == "/start":
        q = {k: float(v[0]) for k, v in parse_qs(url.query).items()}
        RUNNING[:] = [asyncio.ensure_future(run(q["at"], q["rate"], q["seconds"]))]
        body = {"started": True}
    elif url.path == "/log":
        if RUNNING and not RUNNING[0].done():
            return connection.respond(HTTPStatus.CONFLICT, "still running\n")
        body = {"log": LOG}
    else:
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
    return connection.respond(HTTPStatus.OK, orjson.dumps(body).decode())  # JSON in a text/plain body


async def main(host: str, port: int) -> None:
    # the same heartbeat as aiw's defaults; a listen backlog for a thousand clients at once
    async with serve(handler, host, port, process_request=control, compression=None, ping_interval=10,
                     ping_timeout=10, max_queue=None, backlog=2048) as server:
        await server.serve_forever()


if __name__ == "__main__":
    from bench.subscribers import raise_nofile

    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    raise_nofile()
    import uvloop

    uvloop.run(main(a.host, a.port))
