"""A connection's sends: eager when the client keeps up, queued behind a send that waits
for a full client buffer, in order, and closed on failure."""

from __future__ import annotations

import asyncio

import pytest

from ups_server.fanout import Connection

pytestmark = pytest.mark.anyio


class Client:
    """A send() that suspends while ``paused`` (like uvicorn's on a full transport)."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.fail_on: str | None = None

    async def send(self, text: str) -> None:
        await self.writable.wait()
        if text == self.fail_on:
            raise OSError("connection reset")
        self.got.append(text)


async def test_eager_sends_complete_without_a_task() -> None:
    c = Client()
    conn = Connection("AE", c.send, queue_max=100)
    conn.buffering = False
    for i in range(1, 4):
        conn.offer(f"{i}-0", f"{i - 1}-0", f"m{i}")
    assert c.got == ["m1", "m2", "m3"] and conn.drainer is None and not conn.pending
    # sends this close together share one confirmation entry: the last id, the first prev
    assert [(u[0], u[1]) for u in conn.unconfirmed] == [("3-0", "0-0")]


async def test_a_waiting_send_keeps_order_and_the_rest_queue_behind_it() -> None:
    c = Client()
    conn = Connection("AE", c.send, queue_max=100)
    conn.buffering = False
    c.writable.clear()  # the client's buffer is full
    for i in range(1, 5):
        conn.offer(f"{i}-0", f"{i - 1}-0", f"m{i}")
    assert c.got == [] and conn.drainer is not None and len(conn.pending) == 4
    assert conn.oldest_unsent_prev() == "0-0"  # nothing is confirmed past the one in flight
    conn.offer("2-0", "1-0", "m2")  # a replayed duplicate is dropped
    c.writable.set()
    await asyncio.sleep(0.05)
    assert c.got == ["m1", "m2", "m3", "m4"] and conn.drainer is None and not conn.pending
    conn.offer("5-0", "4-0", "m5")  # eager again once drained
    assert c.got[-1] == "m5"


async def test_a_failed_send_closes_the_connection() -> None:
    c = Client()
    conn = Connection("AE", c.send, queue_max=100)
    conn.buffering = False
    c.fail_on = "m2"
    conn.offer("1-0", "0-0", "m1")
    conn.offer("2-0", "1-0", "m2")
    assert conn.closed.is_set() and isinstance(conn.failure, OSError)
    conn.offer("3-0", "2-0", "m3")
    assert c.got == ["m1"]


async def test_overflow_closes_a_slow_connection() -> None:
    c = Client()
    conn = Connection("AE", c.send, queue_max=3)
    conn.buffering = False
    c.writable.clear()
    for i in range(1, 10):
        conn.offer(f"{i}-0", f"{i - 1}-0", f"m{i}")
    assert conn.overflow and conn.closed.is_set()
    conn.stop()
    await asyncio.sleep(0)
