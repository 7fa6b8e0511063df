"""The event channel: ``{ws-base}/subscribers/{aet}`` (RAD-109 Open Event Channel).

Any syntactically valid AE title may connect, subscribed or not (the standard allows it).
The channel carries no client messages: a client that sends data frames is disconnected
(1008), which affects no other connection. Heartbeats are uvicorn's WebSocket pings
(``AIW_HEARTBEAT_INTERVAL`` / ``AIW_HEARTBEAT_TIMEOUT``): a connection whose pong is late is
closed and its resources freed.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect

from upsrs import vr as vrs
from ups_server.fanout import Connection, log

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


def valid_aet(aet: str) -> str | None:
    """Why ``aet`` is not a valid AE title (VR AE: 1..16 characters, no backslash or
    control characters, not all spaces), or None."""
    if not aet.strip():
        return "the AE title is empty"
    return vrs.check_value("AE", aet)


async def channel(websocket: WebSocket) -> None:
    aet = websocket.path_params["aet"]
    if valid_aet(aet):
        await websocket.close(code=POLICY_VIOLATION)  # before accept: the handshake is refused
        return
    fanout = websocket.app.state.fanout
    await websocket.accept()
    conn = Connection(aet.strip(), websocket.send_text, fanout.queue_max)
    attach = asyncio.create_task(fanout.attach(conn))
    receiver = asyncio.create_task(websocket.receive())
    watch = asyncio.create_task(conn.closed.wait())
    reason = "closed by client"
    try:
        done, _ = await asyncio.wait({receiver, watch}, return_when=asyncio.FIRST_COMPLETED)
        if receiver in done:
            msg = receiver.result()
            if msg["type"] != "websocket.disconnect":
                reason = "client sent data on an event channel"
                await websocket.close(code=POLICY_VIOLATION, reason="this channel carries no client messages")
        elif conn.overflow:
            reason = "too slow: queue overflow"
            await websocket.close(code=TRY_AGAIN_LATER, reason="event queue overflow; reconnect to replay")
        else:
            reason = f"send failed: {conn.failure!r}"
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:
        reason = repr(exc)
    finally:
        conn.stop()
        for task in (attach, receiver, watch):
            task.cancel()
        for task in (attach, receiver, watch):
            with contextlib.suppress(BaseException):
                await task
        fanout.detach(conn)
        log.info("channel closed", aet=conn.aet, reason=reason)
