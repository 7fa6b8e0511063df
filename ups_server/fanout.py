"""Event delivery: the event stream, read by every replica, fanned out to its WebSockets.

The Redis Stream written by each change is the source of truth. Each replica runs one
reader; for every event it works out which of *its* connected AEs are subscribed (by the
current subscription state) and queues one message — serialised once — on each of their
connections, in stream order, so events of a workitem arrive in order.

Nothing is lost across drops and restarts: an AE's cursor advances only past events that
are known delivered — sent on a connection that has since answered a heartbeat (uvicorn
fails a connection whose pong is late, so a connection still open ``confirm_after``
seconds after a send has read it). A reconnecting AE, on any replica, first receives what
it missed since its cursor (bounded by count and age), then the live events: at-least-once,
ordered.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import orjson
import structlog
from redis.asyncio import Redis

from upsrs import events as ev
from upsrs import subscriptions as table
from upsrs.uids import GLOBAL_SUBSCRIPTION

from ups_server.cursors import Cursors, parse_id
from ups_server.subscriptions import Subscriptions, effective

log = structlog.get_logger("aiw.events")
Send = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Entry:
    id: str
    prev: str
    uid: str
    seq: int
    type: int
    body: bytes
    to: str

    @classmethod
    def parse(cls, stream_id: bytes | str, fields: dict[bytes, bytes], prev: str) -> "Entry":
        sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
        return cls(sid, prev, fields[b"uid"].decode(), int(fields.get(b"seq", b"0")), int(fields[b"type"]),
                   fields[b"body"], fields.get(b"to", b"").decode())

    @classmethod
    def chain(cls, raw: list[Any], prev: str) -> "list[Entry]":
        """Stream entries as read (XRANGE / XREAD), each knowing the ID before it."""
        out = []
        for sid, fields in raw:
            out.append(cls.parse(sid, fields, prev))
            prev = out[-1].id
        return out


async def _resume(coro: Any, awaiting: Any) -> None:
    """Finish a coroutine that was started by hand and suspended on ``awaiting`` (what it
    yielded): what an asyncio Task would do with it from there."""
    while True:
        error: BaseException | None = None
        try:
            if awaiting is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            else:
                await awaiting
        except BaseException as exc:  # hand it to the coroutine, as a Task would
            error = exc
        try:
            awaiting = coro.throw(error) if error is not None else coro.send(None)
        except StopIteration:
            return


CHECKPOINT = 0.25  # seconds of sends one confirmation entry covers


@dataclass(eq=False)
class Connection:
    """One WebSocket of one subscriber AE.

    A send is started eagerly, in the dispatcher: uvicorn's send returns without suspending
    unless the client's transport is paused (its buffer is full), so most events cost no
    task switch at all — as with a plain broadcast. A send that does suspend is finished by
    this connection's drain task, and later events queue behind it, so a slow client delays
    nobody else."""

    aet: str
    send: Send
    queue_max: int
    opened: float = field(default_factory=time.monotonic)
    pending: deque[tuple[str, str, str]] = field(default_factory=deque)  # (id, prev id, text); [0] may be in flight
    # sent, not yet confirmed: (last id, prev id of the first, time of the last send) per
    # CHECKPOINT seconds, so confirm() handles a few entries a second, not one per event
    unconfirmed: deque[tuple[str, str, float]] = field(default_factory=deque)
    buffering: bool = True  # while replaying, live events wait in ``buffer``
    buffer: list[tuple[str, str, str]] = field(default_factory=list)
    last_id: tuple[int, int] = (0, 0)
    overflow: bool = False
    failure: BaseException | None = None
    drainer: asyncio.Future | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def enqueue(self, sid: str, prev: str, text: str, pid: tuple[int, int] | None = None) -> None:
        pid = pid or parse_id(sid)
        if pid <= self.last_id or self.closed.is_set():
            return
        if len(self.pending) >= self.queue_max:
            self.overflow = True  # too slow: drop the connection; it replays on reconnect
            self.closed.set()
            return
        self.last_id = pid
        if self.drainer is not None or self.pending:
            self.pending.append((sid, prev, text))
            return
        coro = self.send(text)
        try:
            awaiting = coro.send(None)
        except StopIteration:
            self._sent(sid, prev)
            return
        except BaseException as exc:
            self._fail(exc)
            return
        self.pending.append((sid, prev, text))  # in flight: visible to confirm()
        self.drainer = asyncio.ensure_future(self._drain(coro, awaiting))

    def offer(self, sid: str, prev: str, text: str, pid: tuple[int, int] | None = None) -> None:
        if self.buffering:
            self.buffer.append((sid, prev, text))
        else:
            self.enqueue(sid, prev, text, pid)

    async def _drain(self, coro: Any, awaiting: Any) -> None:
        try:
            await _resume(coro, awaiting)
            sid, prev, _ = self.pending.popleft()
            self._sent(sid, prev)
            while self.pending:
                sid, prev, text = self.pending[0]
                await self.send(text)
                self.pending.popleft()
                self._sent(sid, prev)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)
        finally:
            self.drainer = None

    def _sent(self, sid: str, prev: str) -> None:
        """Record a send. Sends within CHECKPOINT seconds share one entry that carries the
        time of its latest send, so confirming the entry is safe for all of them."""
        now = time.monotonic()
        u = self.unconfirmed
        if u and now - u[-1][2] < CHECKPOINT:
            u[-1] = (sid, u[-1][1], now)
        else:
            u.append((sid, prev, now))

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self.closed.set()

    def stop(self) -> None:
        if self.drainer is not None:
            self.drainer.cancel()

    def oldest_unsent_prev(self) -> str | None:
        if self.unconfirmed:
            return self.unconfirmed[0][1]
        return self.pending[0][1] if self.pending else None


class ReplayCache:
    """The recent stream range replays are served from, shared by this replica's
    reconnecting AEs — after a restart all of them — so each event is read, its
    workitem's subscription records looked up, and its message rendered once, not once
    per subscriber. Each use extends the range to the stream's end (a small read); a cursor
    older than the range re-reads it from there."""

    def __init__(self, redis: Redis, events_key: str, subs: Subscriptions, max_events: int):
        self.redis, self.events_key, self.subs, self.max_events = redis, events_key, subs, max_events
        self.lo: tuple[int, int] | None = None  # the range covers (lo, last entry]
        self.entries: list[Entry] = []
        self.ids: list[tuple[int, int]] = []
        self.explicit: dict[str, dict[str, str]] = {}
        self.rendered: dict[str, str] = {}
        self.lock = asyncio.Lock()

    async def _read(self, after: tuple[int, int], upto: tuple[int, int] | None = None) -> list[Entry]:
        end = "+" if upto is None else f"{upto[0]}-{upto[1]}"
        raw = await self.redis.xrange(self.events_key, f"({after[0]}-{after[1]}", end, count=self.max_events * 2)
        return Entry.chain(raw, f"{after[0]}-{after[1]}")

    async def since(self, start: tuple[int, int]) -> list[Entry]:
        async with self.lock:
            if self.lo is None:
                self.lo = start
            elif start < self.lo:  # an older cursor: read just the gap in front of the range
                older = await self._read(start, self.lo)
                self.explicit.update(await self.subs.explicit_many(e.uid for e in older if not e.to))
                self.entries[:0] = older
                self.ids[:0] = [parse_id(e.id) for e in older]
                self.lo = start
            newer = await self._read(self.ids[-1] if self.ids else self.lo)
            if newer:
                self.explicit.update(await self.subs.explicit_many(e.uid for e in newer if not e.to))
                self.entries += newer
                self.ids += [parse_id(e.id) for e in newer]
                if len(self.entries) > 4 * self.max_events:  # keep the range bounded
                    cut = len(self.entries) - 2 * self.max_events
                    self.lo = self.ids[cut - 1]
                    del self.entries[:cut], self.ids[:cut]
            return self.entries[bisect.bisect_right(self.ids, start):]

    def text(self, e: Entry, render: Callable[[Entry], str]) -> str:
        found = self.rendered.get(e.id)
        if found is None:
            found = self.rendered[e.id] = render(e)
        return found


class Fanout:
    def __init__(self, redis: Redis, events_key: str, subs: Subscriptions, cursors: Cursors, *,
                 confirm_after: float, replay_max_events: int, replay_max_age: float, queue_max: int):
        self.redis = redis
        self.events_key = events_key
        self.subs = subs
        self.cursors = cursors
        self.confirm_after = confirm_after
        self.replay_max_events = replay_max_events
        self.replay_max_age = replay_max_age
        self.queue_max = queue_max
        self.conns: dict[str, set[Connection]] = {}
        self.message_id = 0
        self.position = "0-0"
        self.positions: deque[tuple[float, str]] = deque(maxlen=4096)  # (time, reader position)
        self.delivered = 0
        self.replays = ReplayCache(redis, events_key, subs, replay_max_events)

    # ------------------------------------------------------------ messages
    def render(self, e: Entry) -> str:
        """The event report as sent (serialised once for every recipient)."""
        self.message_id = (self.message_id + 1) & 0xFFFF
        uid = e.uid if e.type != ev.SCP_STATUS_CHANGE else GLOBAL_SUBSCRIPTION
        return orjson.dumps(ev.message(uid, e.type, orjson.loads(e.body), self.message_id)).decode()

    async def recipients(self, entries: list[Entry], only: str | None = None) -> list[list[str]]:
        """For each entry, the connected AEs (or just ``only``) it goes to."""
        aets = [only] if only is not None else list(self.conns)
        if not aets:
            return [[] for _ in entries]
        globals_, filtered = await self.subs.global_records()
        explicit = await self.subs.explicit_many(e.uid for e in entries if not e.to)
        anysub: dict[str, bool] | None = None
        out: list[list[str]] = []
        for e in entries:
            if e.to == "*":
                if anysub is None:
                    anysub = {a: await self.subs.has_any(a) for a in aets}
                out.append([a for a in aets if anysub[a]])
            elif e.to:
                out.append([e.to] if e.to in aets else [])
            else:
                rec = explicit.get(e.uid, {})
                out.append([a for a in aets if effective(a, rec, globals_, e.seq) != table.NONE])
        return out

    # ------------------------------------------------------------ the reader
    async def run(self) -> None:
        self.position = await self.cursors.last_event_id()
        self.positions.append((time.monotonic(), self.position))
        while True:
            try:
                res = await self.redis.xread({self.events_key: self.position}, block=1000, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restart or network blip: retry, never die
                log.warning("event reader failed; retrying", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            if res:
                raw = res[0][1]
                if self.conns:
                    entries = Entry.chain(raw, self.position)
                    await self.dispatch(entries)
                    self.position = entries[-1].id
                else:
                    # no channel open on this replica: nothing to parse or deliver (what
                    # dispatch would find); replays read the stream themselves
                    last = raw[-1][0]
                    self.position = last.decode() if isinstance(last, bytes) else last
            self.positions.append((time.monotonic(), self.position))

    async def dispatch(self, entries: list[Entry]) -> None:
        if not self.conns:
            return
        for e, aets in zip(entries, await self.recipients(entries)):
            if not aets:
                continue
            text = self.render(e)
            pid = parse_id(e.id)
            for aet in aets:
                for conn in tuple(self.conns.get(aet, ())):
                    conn.offer(e.id, e.prev, text, pid)
                    self.delivered += 1

    # ------------------------------------------------------------ connections
    async def attach(self, conn: Connection) -> None:
        """Register a connection, replay what its AE missed, then go live."""
        self.conns.setdefault(conn.aet, set()).add(conn)
        try:
            await self._replay(conn)
        finally:
            for sid, prev, text in conn.buffer:
                conn.enqueue(sid, prev, text)
            conn.buffer.clear()
            conn.buffering = False

    async def _replay(self, conn: Connection) -> None:
        cursor = await self.cursors.get(conn.aet)
        if cursor is None:
            await self.cursors.start_if_unset(conn.aet)
            cursor = await self.cursors.get(conn.aet) or "0-0"
        floor_ms = int((time.time() - self.replay_max_age) * 1000)
        start = max(parse_id(cursor), (floor_ms, 0))
        conn.last_id = start
        entries = await self.replays.since(start)
        if not entries:
            return
        entries = entries[-self.replay_max_events:]
        globals_, _ = await self.subs.global_records()
        anysub: bool | None = None
        for e in entries:
            if e.to == "*":
                if anysub is None:
                    anysub = await self.subs.has_any(conn.aet)
                wanted = anysub
            elif e.to:
                wanted = e.to == conn.aet
            else:
                wanted = effective(conn.aet, self.replays.explicit.get(e.uid, {}), globals_, e.seq) != table.NONE
            if wanted:
                conn.enqueue(e.id, e.prev, self.replays.text(e, self.render))
        conn.last_id = max(conn.last_id, parse_id(entries[-1].id))
        log.info("replayed", aet=conn.aet, events=len(entries), since=cursor)

    def detach(self, conn: Connection) -> None:
        group = self.conns.get(conn.aet)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.conns[conn.aet]

    # ------------------------------------------------------------ confirmation
    def _position_at(self, t: float) -> str | None:
        best = None
        for when, pos in self.positions:
            if when > t:
                break
            best = pos
        return best

    async def confirm(self) -> None:
        """Advance the cursors of connected AEs past what is known delivered."""
        now = time.monotonic()
        horizon = now - self.confirm_after
        best: dict[str, tuple[int, int]] = {}
        idle = self._position_at(horizon)
        for aet, group in list(self.conns.items()):
            for conn in group:
                if conn.buffering or conn.opened > horizon:
                    continue
                confirmed: str | None = None
                while conn.unconfirmed and conn.unconfirmed[0][2] <= horizon:
                    confirmed = conn.unconfirmed.popleft()[0]
                waiting = conn.oldest_unsent_prev()
                # with events still in flight, only what precedes the oldest of them is safe;
                # an idle connection has seen (or had no business with) all the reader had
                # read by the horizon
                candidate = waiting if waiting else max(filter(None, [confirmed, idle]), key=parse_id, default=None)
                if candidate:
                    cid = parse_id(candidate)
                    if cid > best.get(aet, (0, 0)):
                        best[aet] = cid
        for aet, cid in best.items():
            await self.cursors.advance(aet, f"{cid[0]}-{cid[1]}")

    async def confirm_loop(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.confirm()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cursor confirmation failed", error=str(exc))

    # ------------------------------------------------------------ status
    async def broadcast_local(self, etype: int, info: dict[str, Any], timeout: float = 1.0) -> None:
        """Send one event to every connection on this replica now (GOING DOWN)."""
        e = Entry("0-0", "0-0", GLOBAL_SUBSCRIPTION, 0, etype, orjson.dumps(info), "*")
        text = self.render(e)
        sends = [conn.send(text) for group in self.conns.values() for conn in group]
        if sends:
            await asyncio.wait([asyncio.ensure_future(s) for s in sends], timeout=timeout)

    def stats(self) -> dict[str, int]:
        return {"subscriber_aes": len(self.conns), "connections": sum(len(g) for g in self.conns.values()),
                "delivered": self.delivered}
