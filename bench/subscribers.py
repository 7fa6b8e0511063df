"""Lean event-channel subscribers in separate processes, for the events benchmark.

Why not ``upsrs.eventclient.EventChannel`` for a thousand connections: on 2 cores the
subscribers share the machine with the server they measure, so each received message must
cost the client far less than it costs the server to send. ``EventChannel`` runs the
``websockets`` asyncio client, with one task, one queue hand-off and one parsed
``EventReport`` per message. Here each connection is an asyncio ``Protocol`` driven by the
``websockets`` library's Sans-I/O ``ClientProtocol`` (the same handshake and frame parser,
answering the server's pings), on uvloop. A message is timestamped when its bytes arrive
(one ``time.monotonic()`` per read), its identity (event type, Affected SOP Instance UID,
state) is parsed once per distinct message text in the process, and each connection keeps
the set of events it holds, so duplicates (at-least-once delivery) are counted, not timed.

Reconnection, when asked for: after a lost connection or a failed handshake, the same
capped exponential backoff with full jitter as ``EventChannel``, by calling
``EventChannel.backoff`` of an ``EventChannel`` built with its default parameters.

The parent (``SubPool``) keeps the processes for the whole run and sends them commands over
pipes: connect, reset, wait (until every connection holds given events), collect, close.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from array import array
from typing import Any

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from upsrs.eventclient import EventChannel
from bench.procs import ProcessPool

Key = tuple[int, str, str]  # (Event Type ID, Affected SOP Instance UID, state or status)


def raise_nofile() -> int:
    """Raise the open-files soft limit to the hard limit (a thousand sockets per side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def event_key(etype: int, uid: str, info: dict[str, Any]) -> Key:
    """What identifies an event without anything non-standard: a UPS State Report by its
    workitem and Procedure Step State, an SCP Status Change by its status; anything else by
    its whole event information."""

    def first(tag: str) -> str:
        v = info.get(tag) or {}
        vals = v.get("Value") or [""]
        return str(vals[0])

    if etype == 1:
        return (etype, uid, first("00741000"))
    if etype == 4:
        return (etype, uid, first("00741242"))
    return (etype, uid, orjson.dumps({k: v for k, v in info.items() if not k.startswith("0000")},
                                     option=orjson.OPT_SORT_KEYS).decode())


def message_key(raw: bytes) -> Key:
    ds = orjson.loads(raw)
    return event_key(int(ds["00001002"]["Value"][0]), str(ds["00001000"]["Value"][0]), ds)


class Worker:
    """One client process: its connections and what they received."""

    def __init__(self) -> None:
        self.conns: dict[int, Sub] = {}
        self.keepers: list[asyncio.Future] = []  # reconnecting connections' loops
        self.keys: list[Key] = []
        self.key_ids: dict[Key, int] = {}
        self.cache: dict[bytes, int] = {}
        self.reset()

    def reset(self) -> None:
        self.rec_c, self.rec_k, self.rec_t = array("i"), array("i"), array("d")
        self.dups = 0
        self.messages = 0
        self.bad = 0
        for c in self.conns.values():
            c.seen = set()
            c.why = {}

    def key_id(self, key: Key) -> int:
        i = self.key_ids.get(key)
        if i is None:
            i = self.key_ids[key] = len(self.keys)
            self.keys.append(key)
        return i

    def received(self, conn: Sub, raw: bytes, t: float) -> None:
        self.messages += 1
        k = self.cache.get(raw)
        if k is None:
            try:
                k = self.key_id(message_key(raw))
            except (ValueError, KeyError, IndexError, TypeError):
                self.bad += 1
                return
            if len(self.cache) > 50_000:  # replayed copies carry their own Message IDs
                self.cache.clear()
            self.cache[raw] = k
        if k in conn.seen:
            self.dups += 1
            return
        conn.seen.add(k)
        self.rec_c.append(conn.idx)
        self.rec_k.append(k)
        self.rec_t.append(t)


class Sub(asyncio.Protocol):
    """One subscriber connection (one AE title)."""

    def __init__(self, w: Worker, idx: int, url: str, reconnect: bool, open_timeout: float = 10.0):
        self.w, self.idx, self.url, self.reconnect = w, idx, url, reconnect
        self.host_port = parse_uri(url)
        self.open_timeout = open_timeout
        self.why: dict[str, int] = {}  # how connections ended or attempts failed
        self.policy = EventChannel(url, rng=random.Random(idx))  # its default backoff parameters
        self.seen: set[int] = set()
        self.transport: asyncio.Transport | None = None
        self.proto: ClientProtocol | None = None
        self.open = False
        self.closing = False
        self.attempt = 0
        self.connects: list[float] = []  # handshake completions
        self.losses: list[float] = []
        self.opened = asyncio.Event()
        self.lost = asyncio.Event()
        self.partial: list[bytes] = []

    # ------------------------------------------------------------ life
    async def run_once(self) -> bool:
        """One connection attempt; True when the handshake completed."""
        loop = asyncio.get_running_loop()
        self.opened.clear()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self, self.host_port.host, self.host_port.port),
                                   self.open_timeout)
            await asyncio.wait_for(self.opened.wait(), self.open_timeout)
            if not self.open and self.transport is not None:
                self._count("handshake refused")
                self.transport.abort()
            return self.open
        except TimeoutError:
            self._count("open timeout")
            if self.transport is not None:
                self.transport.abort()
            return False
        except OSError as exc:
            self._count(type(exc).__name__)
            if self.transport is not None:
                self.transport.abort()
            return False

    def _count(self, why: str) -> None:
        self.why[why] = self.why.get(why, 0) + 1

    async def keep(self) -> None:
        """Connect, and while ``reconnect``, come back after every loss with backoff."""
        while not self.closing:
            if not self.open and not await self.run_once():
                if not self.reconnect or self.closing:
                    return
                await asyncio.sleep(self.policy.backoff(self.attempt))
                self.attempt += 1
                continue
            if not self.reconnect:
                return
            await self.lost.wait()
            if self.closing:
                return
            await asyncio.sleep(self.policy.backoff(0))  # EventChannel sleeps after a loss too
            self.attempt = 1

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.lost = asyncio.Event()
        self.partial = []
        self.proto = ClientProtocol(self.host_port, max_size=None)
        self.proto.send_request(self.proto.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        t = time.monotonic()
        proto = self.proto
        assert proto is not None
        proto.receive_data(data)
        for ev in proto.events_received():
            if type(ev) is Frame:
                if ev.opcode is Opcode.TEXT or ev.opcode is Opcode.CONT:
                    if not ev.fin:
                        self.partial.append(bytes(ev.data))
                        continue
                    raw = b"".join(self.partial) + ev.data if self.partial else bytes(ev.data)
                    self.partial = []
                    self.w.received(self, raw, t)
            elif isinstance(ev, Response):
                self.open = proto.state is State.OPEN
                if self.open:
                    self.connects.append(t)
                    self.attempt = 0
                self.opened.set()
        self.flush()
        if proto.close_expected() and self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self.proto is not None:
            self.proto.receive_eof()
            self.flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.losses.append(time.monotonic())
            rcvd = self.proto.close_rcvd if self.proto is not None else None
            self._count(f"closed by server {rcvd.code}" if rcvd is not None else
                        "closed by us" if self.closing else f"lost ({type(exc).__name__ if exc else 'EOF'})")
        self.open = False
        self.transport = None
        self.opened.set()
        self.lost.set()

    def flush(self) -> None:
        if self.proto is None or self.transport is None:
            return
        for chunk in self.proto.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


async def _connect(w: Worker, spec: dict[str, Any]) -> dict[str, Any]:
    sem = asyncio.Semaphore(spec.get("concurrency", 50))
    subs = []
    for idx, aet in spec["aets"]:
        s = Sub(w, idx, spec["url"] + aet, spec.get("reconnect", False))
        w.conns[idx] = s
        subs.append(s)

    async def first(s: Sub) -> None:
        async with sem:
            for attempt in range(5):
                if await s.run_once():
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
        if s.reconnect and s.open:
            w.keepers.append(asyncio.ensure_future(s.keep()))

    await asyncio.gather(*(first(s) for s in subs))
    return {"connected": sum(1 for s in subs if s.open), "of": len(subs)}


async def _wait(w: Worker, spec: dict[str, Any]) -> dict[str, Any]:
    """Until every connection holds every expected event (or the deadline)."""
    want = {w.key_id(tuple(k)) for k in spec["expected"]}  # type: ignore[arg-type]
    deadline = time.monotonic() + spec["timeout"]
    while True:
        if all(want <= c.seen for c in w.conns.values()):
            return {"complete": True, "at": time.monotonic()}
        if time.monotonic() > deadline:
            missing = sum(len(want - c.seen) for c in w.conns.values())
            return {"complete": False, "at": time.monotonic(), "missing": missing}
        await asyncio.sleep(0.05)


async def _serve(pipe: Any) -> None:
    w = Worker()
    loop = asyncio.get_running_loop()
    while True:
        cmd = await loop.run_in_executor(None, pipe.recv)  # a blocking read in a thread: the loop runs on
        if cmd is None:
            break
        op, spec = cmd
        try:
            if op == "connect":
                reply = await _connect(w, spec)
            elif op == "reset":
                w.reset()
                reply = {"ok": True}
            elif op == "status":
                reply = {"open": sum(1 for c in w.conns.values() if c.open), "of": len(w.conns)}
            elif op == "wait":
                reply = await _wait(w, spec)
            elif op == "collect":
                reply = {"keys": w.keys, "c": w.rec_c.tobytes(), "k": w.rec_k.tobytes(), "t": w.rec_t.tobytes(),
                         "dups": w.dups, "messages": w.messages, "bad": w.bad,
                         "connects": {i: c.connects for i, c in w.conns.items()},
                         "losses": {i: c.losses for i, c in w.conns.items()},
                         "why": [c.why for c in w.conns.values()]}
            elif op == "close":
                for c in w.conns.values():
                    c.close()
                for k in w.keepers:
                    k.cancel()
                await asyncio.sleep(0.1)
                w.conns.clear()
                w.keepers = []
                w.keys, w.key_ids, w.cache = [], {}, {}
                w.reset()
                reply = {"ok": True}
            else:
                reply = {"exception": f"unknown command {op}"}
        except Exception as exc:  # report, keep the worker alive
            import traceback

            reply = {"exception": f"{exc!r}\n{traceback.format_exc()}"}
        pipe.send(reply)


def _worker(pipe: Any) -> None:
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(_serve(pipe))


class SubPool(ProcessPool):
    """Subscriber processes kept for the whole run; connection i lives in process i % n."""

    def __init__(self, processes: int = 4):
        super().__init__(_worker, processes)

    def _all(self, op: str, specs: list[dict[str, Any]] | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        for i, a in enumerate(self.pipes):
            a.send((op, specs[i] if isinstance(specs, list) else (specs or {})))
        out = [a.recv() for a in self.pipes]
        for r in out:
            if "exception" in r:
                raise RuntimeError(f"subscriber process failed in {op}: {r['exception']}")
        return out

    def connect(self, url: str, aets: list[str], *, reconnect: bool = False) -> int:
        """Open one channel per AE title (``url`` + AE); returns how many are open."""
        n = len(self.pipes)
        specs = [{"url": url, "aets": [(i, a) for i, a in enumerate(aets) if i % n == k], "reconnect": reconnect}
                 for k in range(n)]
        return sum(r["connected"] for r in self._all("connect", specs))

    def open_count(self) -> int:
        return sum(r["open"] for r in self._all("status"))

    def reset(self) -> None:
        self._all("reset")

    def wait(self, expected: list[Key], timeout: float) -> dict[str, Any]:
        res = self._all("wait", {"expected": expected, "timeout": timeout})
        return {"complete": all(r["complete"] for r in res), "at": max(r["at"] for r in res),
                "missing": sum(r.get("missing", 0) for r in res)}

    def collect(self) -> dict[str, Any]:
        """Every first receipt of an event by a connection, as numpy arrays ``conn``,
        ``key`` (index into ``keys``) and ``t`` (monotonic seconds); plus duplicates,
        message counts and the connections' handshake and loss times."""
        import numpy as np

        keys: list[Key] = []
        ids: dict[Key, int] = {}
        cs, ks, ts = [], [], []
        out: dict[str, Any] = {"dups": 0, "messages": 0, "bad": 0, "connects": {}, "losses": {}}
        for r in self._all("collect"):
            remap = np.array([ids.setdefault(tuple(k), len(ids)) for k in r["keys"]] or [0], dtype=np.int64)
            cs.append(np.frombuffer(r["c"], dtype=np.int32))
            ks.append(remap[np.frombuffer(r["k"], dtype=np.int32)])
            ts.append(np.frombuffer(r["t"], dtype=np.float64))
            for name in ("dups", "messages", "bad"):
                out[name] += r[name]
            out["connects"].update(r["connects"])
            out["losses"].update(r["losses"])
            for d in r["why"]:
                for k, v in d.items():
                    out.setdefault("why", {})[k] = out.get("why", {}).get(k, 0) + v
        keys = list(ids)
        out.update(keys=keys, conn=np.concatenate(cs), key=np.concatenate(ks), t=np.concatenate(ts))
        return out

    def close_all(self) -> None:
        self._all("close")

