"""The event channel client (RAD-109 / RAD-87): typed UPS event reports as an async iterator.

The connection heals itself — the lesson of the deployment aiw learns from, whose
subscribers missed updates whenever a WebSocket dropped:
  * heartbeat: WebSocket pings every ``heartbeat_interval``; no pong within
    ``heartbeat_timeout`` and the connection counts as dead;
  * reconnect with capped exponential backoff and full jitter (so a thousand clients do not
    return at the same instant after a server restart);
  * ``on_connect`` runs after every (re)connection, and ``on_cold_start`` when the server
    reports that it lost its subscriptions (SCP Status Change, Subscription List Status
    COLD STARTED), so the owner can subscribe again.
A server that replays missed events (aiw does) makes reconnection lossless; events may then
arrive twice (at-least-once), which ``EventReport.key`` helps to recognise.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
import websockets
from websockets.asyncio.client import connect

from upsrs import dicomjson as dj
from upsrs import events as ev

log = logging.getLogger("upsrs.events")
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class EventReport:
    """One N-EVENT-REPORT as received."""

    type: int
    uid: str
    message_id: int
    dataset: dict[str, Any]

    @property
    def name(self) -> str:
        return ev.EVENT_NAMES.get(self.type, f"event {self.type}")

    def value(self, tag: int) -> Any:
        return dj.first(self.dataset, tag)

    @property
    def state(self) -> str | None:
        return self.value(0x00741000)

    @property
    def readiness(self) -> str | None:
        return self.value(0x00404041)

    @property
    def requesting_ae(self) -> str | None:
        return self.value(0x00741236)

    @property
    def scp_status(self) -> str | None:
        return self.value(0x00741242)

    @property
    def cold_start(self) -> bool:
        """The server lost its subscriptions: subscribe again."""
        return self.value(0x00741244) in ("COLD STARTED", "COLD START")

    @property
    def progress(self) -> str | None:
        items = dj.items(self.dataset, 0x00741002)
        return dj.first(items[0], 0x00741004) if items else None

    @property
    def key(self) -> bytes:
        """The event's content without the per-message ID: equal for a replayed duplicate."""
        return dj.dumps({k: v for k, v in self.dataset.items() if k != "00000110"})

    @classmethod
    def parse(cls, text: str | bytes) -> "EventReport":
        ds = orjson.loads(text)
        if not isinstance(ds, dict):
            raise ValueError("an event report is a DICOM JSON object")
        etype = dj.first(ds, 0x00001002)
        uid = dj.first(ds, 0x00001000)
        if not isinstance(etype, int) or not isinstance(uid, str):
            raise ValueError("an event report needs Event Type ID (0000,1002) and Affected SOP Instance UID (0000,1000)")
        mid = dj.first(ds, 0x00000110)
        return cls(etype, uid, mid if isinstance(mid, int) else 0, ds)


class EventChannel:
    """``async for event in EventChannel(url): ...`` — never ends by itself; ``close()``
    stops it. ``status`` is connecting / connected / reconnecting / closed."""

    def __init__(self, url: str, *, heartbeat_interval: float = 10.0, heartbeat_timeout: float = 10.0,
                 backoff_initial: float = 0.25, backoff_max: float = 30.0, open_timeout: float = 10.0,
                 on_connect: Hook | None = None, on_cold_start: Hook | None = None,
                 headers: dict[str, str] | None = None, rng: random.Random | None = None):
        self.url = url
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.open_timeout = open_timeout
        self.on_connect = on_connect
        self.on_cold_start = on_cold_start
        self.headers = headers or {}
        self.rng = rng or random.Random()
        self.status = "connecting"
        self.connects = 0
        self.skipped = 0  # malformed messages logged and skipped
        self._closing = False
        self._ws: Any = None

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, initial * 2**attempt)]."""
        return self.rng.uniform(0, min(self.backoff_max, self.backoff_initial * (2 ** attempt)))

    async def close(self) -> None:
        self._closing = True
        self.status = "closed"
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> "EventChannel":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[EventReport]:
        attempt = 0
        while not self._closing:
            try:
                async with connect(self.url, ping_interval=self.heartbeat_interval,
                                   ping_timeout=self.heartbeat_timeout, open_timeout=self.open_timeout,
                                   additional_headers=self.headers, max_queue=None) as ws:
                    self._ws = ws
                    self.status = "connected"
                    self.connects += 1
                    attempt = 0
                    if self.on_connect is not None:
                        await self.on_connect()
                    async for raw in ws:
                        try:
                            event = EventReport.parse(raw)
                        except (ValueError, orjson.JSONDecodeError) as exc:
                            self.skipped += 1
                            log.warning("malformed event skipped: %s", exc)
                            continue
                        if event.type == ev.SCP_STATUS_CHANGE and event.cold_start and self.on_cold_start:
                            await self.on_cold_start()
                        yield event
            except asyncio.CancelledError:
                raise
            except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError) as exc:
                log.info("event channel %s lost: %r", self.url, exc)
            finally:
                self._ws = None
            if self._closing:
                break
            self.status = "reconnecting"
            await asyncio.sleep(self.backoff(attempt))
            attempt += 1
        self.status = "closed"
