"""Pushing model changes to open pages (Server-Sent Events).

One task batches the changed rows every ``push_interval`` and serialises the batch once,
whatever the number of pages; each page has a bounded queue, and a page that cannot keep
up is dropped — its EventSource reconnects by itself and starts again from a snapshot, so
a slow browser costs memory nobody else pays for. SSE rather than a WebSocket: the
traffic is one-way, browsers reconnect SSE on their own, and it passes proxies as plain
HTTP.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from watcher.model import Model

QUEUE_MAX = 256


@dataclass(eq=False)
class Page:
    uid: str | None  # a workitem page follows one row; the table follows all
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    dropped: bool = False


class Publisher:
    def __init__(self, model: Model, status: Callable[[], dict[str, Any]], attention: Callable[[], dict[str, Any]],
                 interval: float = 0.1, attention_interval: float = 1.0):
        self.model = model
        self.status = status
        self.attention = attention
        self.interval = interval
        self.attention_interval = attention_interval
        self.pages: set[Page] = set()
        self.changed = model.consumer()
        self.pushes = 0

    def open(self, uid: str | None = None) -> Page:
        page = Page(uid)
        self.pages.add(page)
        return page

    def close(self, page: Page) -> None:
        self.pages.discard(page)

    def _offer(self, page: Page, item: tuple[str, bytes]) -> None:
        try:
            page.queue.put_nowait(item)
        except asyncio.QueueFull:
            page.dropped = True  # the page reconnects and gets a fresh snapshot
            self.pages.discard(page)

    async def run(self) -> None:
        last_status: dict[str, Any] | None = None
        last_attention = 0.0
        while True:
            await asyncio.sleep(self.interval)
            status = self.status()
            uids = set(self.changed)
            self.changed.clear()
            table_pages = [p for p in self.pages if p.uid is None]
            if uids and table_pages:
                rows = [self.model.rows[u].to_json() for u in uids if u in self.model.rows]
                data = orjson.dumps({"rows": rows, "status": status, "sent": time.time()})
                for p in table_pages:
                    self._offer(p, ("delta", data))
                self.pushes += 1
            elif status != last_status and table_pages:
                data = orjson.dumps({"rows": [], "status": status, "sent": time.time()})
                for p in table_pages:
                    self._offer(p, ("delta", data))
            for p in [p for p in self.pages if p.uid is not None]:
                if p.uid in uids or status != last_status:
                    row = self.model.rows.get(p.uid)  # type: ignore[arg-type]
                    self._offer(p, ("detail", orjson.dumps({"row": row.detail_json() if row else None,
                                                             "status": status})))
            last_status = status
            now = time.monotonic()
            if table_pages and now - last_attention >= self.attention_interval:
                last_attention = now
                data = orjson.dumps(self.attention())
                for p in table_pages:
                    self._offer(p, ("attention", data))

    def snapshot(self, extra: dict[str, Any]) -> bytes:
        rows = [r.to_json() for r in self.model.rows.values()]
        return orjson.dumps({"rows": rows, "status": self.status(), "sent": time.time(), **extra})


def sse(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"
