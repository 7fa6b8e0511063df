"""A subscriber for the tests: an EventChannel running in the background, collecting."""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from upsrs.eventclient import EventChannel, EventReport


class Collector:
    def __init__(self, url: str, **kw: object):
        self.channel = EventChannel(url, heartbeat_interval=1.0, heartbeat_timeout=1.0, backoff_initial=0.05,
                                    backoff_max=0.5, **kw)  # type: ignore[arg-type]
        self.events: list[EventReport] = []
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "Collector":
        self.task = asyncio.create_task(self._run())
        await self.wait(lambda: self.channel.status == "connected", what="connected")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        async for e in self.channel:
            self.events.append(e)

    async def wait(self, check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {[(e.name, e.uid[-6:], e.state) for e in self.events]}")
            await asyncio.sleep(0.02)

    def of(self, uid: str) -> list[EventReport]:
        return [e for e in self.events if e.uid == uid]

    def kinds(self, uid: str) -> list[tuple[int, str | None]]:
        return [(e.type, e.state) for e in self.of(uid)]

    async def quiet(self, seconds: float = 0.4) -> None:
        """Let in-flight events arrive before asserting that something did NOT."""
        await asyncio.sleep(seconds)
