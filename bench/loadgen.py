"""A lean HTTP/1.1 keep-alive load generator in separate processes.

Why not httpx/aiohttp: on a 2-core machine the client must stay far below the server's
cost per request, or it measures itself. Each client process runs uvloop and a handful of
keep-alive connections that write pre-built request bytes and parse only the status line,
the Content-Length and (when asked) one header. Each connection runs a *scenario*: an
async function that issues requests through ``Ctx.call`` until the phase ends; every call
records (completion time, latency, kind) so the parent can cut one common measurement
window across all processes (``time.monotonic`` is system-wide on Linux).

The parent (``Pool``) keeps its client processes for the whole run, sends each a phase
spec over a pipe, and merges what they send back.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from bench.procs import ProcessPool


class Exhausted(Exception):
    """The scenario ran out of work (e.g. no SCHEDULED workitem left to claim)."""


class BadStatus(Exception):
    pass


class HttpConn:
    """One HTTP/1.1 keep-alive connection; responses must carry Content-Length or none."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.host_line = f"Host: {host}:{port}\r\n".encode()

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 24)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def build(self, method: str, path: str, body: bytes | None = None, headers: bytes = b"") -> bytes:
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.host_line + headers
        if body is not None:
            head += b"Content-Type: application/dicom+json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        return head + b"\r\n" + (body or b"")

    async def send(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """(status, raw header block, body)."""
        assert self.writer is not None and self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        n = 0
        i = head.find(b"content-length:")
        if i < 0:
            i = head.lower().find(b"content-length:")
        if i >= 0:
            j = head.index(b"\r\n", i)
            n = int(head[i + 15:j])
        body = await self.reader.readexactly(n) if n else b""
        return status, head, body


def header(head: bytes, name: bytes) -> bytes | None:
    """A header's value from a raw header block (name in lower case)."""
    low = head.lower()
    i = low.find(b"\r\n" + name + b":")
    if i < 0:
        return None
    j = head.index(b"\r\n", i + 2)
    return head[i + 3 + len(name):j].strip()


@dataclass
class Ctx:
    """What a scenario sees: its connection, the shared work queue of its process, the
    phase parameters, and ``call`` which times one request."""

    conn: HttpConn
    params: dict[str, Any]
    work: deque
    out: list
    index: int  # connection number within the whole phase
    deadline: float
    rec_t: dict[str, array] = field(default_factory=lambda: defaultdict(lambda: array("d")))
    rec_l: dict[str, array] = field(default_factory=lambda: defaultdict(lambda: array("d")))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    exhausted_at: float | None = None

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def take(self) -> Any:
        if not self.work:
            raise Exhausted
        return self.work.popleft()

    async def call(self, kind: str, raw: bytes, expect: tuple[int, ...] = (200, 201)) -> tuple[int, bytes, bytes]:
        t0 = time.monotonic()
        status, head, body = await self.conn.send(raw)
        t1 = time.monotonic()
        if status not in expect:
            self.errors[f"{kind}:{status}"] += 1
            if self.errors[f"{kind}:{status}"] <= 3:
                print(f"[loadgen] {kind} -> {status}: {head[:300]!r} {body[:300]!r}", flush=True)
            raise BadStatus(f"{kind} {status}")
        self.rec_t[kind].append(t1)
        self.rec_l[kind].append(t1 - t0)
        return status, head, body


Scenario = Callable[[Ctx], Awaitable[None]]


def _resolve(name: str) -> Any:
    mod, _, fn = name.partition(":")
    return getattr(importlib.import_module(mod), fn)


async def _run_phase(spec: dict[str, Any]) -> dict[str, Any]:
    scenario: Scenario = _resolve(spec["scenario"])
    setup = spec.get("setup")
    params = dict(spec.get("params") or {})
    if setup:  # per-process preparation (pre-built bodies ...) before the clock starts
        params = _resolve(setup)(params, spec["worker"])
    work = deque(spec.get("work") or [])
    out: list = []
    conns = [HttpConn(spec["host"], spec["port"]) for _ in range(spec["connections"])]
    await asyncio.gather(*(c.open() for c in conns))
    start_at = spec["start_at"]
    deadline = start_at + spec["duration"]
    ctxs = [Ctx(c, params, work, out, spec["first_index"] + i, deadline) for i, c in enumerate(conns)]
    delay = start_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)

    async def one(ctx: Ctx) -> None:
        try:
            while ctx.running():
                try:
                    await scenario(ctx)
                except BadStatus:
                    continue
        except Exhausted:
            ctx.exhausted_at = time.monotonic()

    await asyncio.gather(*(one(c) for c in ctxs))
    for c in conns:
        c.close()
    rec: dict[str, tuple[bytes, bytes]] = {}
    errors: dict[str, int] = defaultdict(int)
    for ctx in ctxs:
        for kind in ctx.rec_t:
            t, lat = rec.get(kind, (b"", b""))
            rec[kind] = (t + ctx.rec_t[kind].tobytes(), lat + ctx.rec_l[kind].tobytes())
        for k, n in ctx.errors.items():
            errors[k] += n
    ex = [c.exhausted_at for c in ctxs if c.exhausted_at is not None]
    return {"rec": rec, "errors": dict(errors), "exhausted_at": min(ex) if ex else None, "out": out}


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker(pipe: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    while True:
        spec = pipe.recv()
        if spec is None:
            return
        try:
            pipe.send(asyncio.run(_run_phase(spec)))
        except Exception as exc:  # report, keep the worker alive
            import traceback

            pipe.send({"exception": f"{exc!r}\n{traceback.format_exc()}"})


@dataclass
class PhaseResult:
    name: str
    window: tuple[float, float]
    latencies: dict[str, list[float]]  # kind -> seconds, completed inside the window
    errors: dict[str, int]
    out: list
    cpu: dict[str, float]  # name -> cores used during the window (1.0 = one core busy)
    exhausted: bool

    @property
    def seconds(self) -> float:
        return self.window[1] - self.window[0]

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(v) for v in self.latencies.values())
        return len(self.latencies.get(kind, []))

    def rate(self, kind: str | None = None) -> float:
        return self.count(kind) / self.seconds if self.seconds > 0 else 0.0


class Pool(ProcessPool):
    """Client processes kept for the whole run."""

    def __init__(self, processes: int):
        super().__init__(_worker, processes)

    def close(self) -> None:
        self.stop()

    def run(self, name: str, host: str, port: int, scenario: str, *, connections: int, duration: float,
            warmup: float = 0.5, params: dict[str, Any] | None = None, work: list | None = None,
            setup: str | None = None, lead: float = 1.0, watch: dict[str, int] | None = None) -> PhaseResult:
        """Run ``scenario`` on ``connections`` connections spread over the processes for
        ``warmup + duration`` seconds; measure the requests completed after the warm-up.
        ``work`` items are dealt out round-robin to the processes (each process shares its
        part among its connections). ``watch``: processes whose CPU use to sample over the
        window (the client processes are always sampled, as "client")."""
        n = len(self.pipes)
        per = [connections // n + (1 if i < connections % n else 0) for i in range(n)]
        parts: list[list] = [[] for _ in range(n)]
        busy = [i for i in range(n) for _ in range(per[i])]  # deal work in proportion to connections
        for i, w in enumerate(work or []):
            parts[busy[i % len(busy)]].append(w)
        start_at = time.monotonic() + lead
        first = 0
        for i, a in enumerate(self.pipes):
            a.send({"scenario": scenario, "setup": setup, "params": params, "work": parts[i], "host": host,
                    "port": port, "connections": per[i], "first_index": first, "worker": i,
                    "start_at": start_at, "duration": warmup + duration})
            first += per[i]
        w0, w1 = start_at + warmup, start_at + warmup + duration
        watch = {**(watch or {}), **{f"client{i}": pid for i, pid in enumerate(self.pids)}}
        time.sleep(max(0.0, w0 - time.monotonic()))
        c0 = {k: proc_cpu(pid) for k, pid in watch.items()}
        t0 = time.monotonic()
        results = []
        c1: dict[str, float] = {}
        t1 = 0.0
        for a in self.pipes:  # CPU is sampled when the first process is done (all are busy till then)
            results.append(a.recv())
            if not c1:
                c1 = {k: proc_cpu(pid) for k, pid in watch.items()}
                t1 = time.monotonic()
        span = max(t1 - t0, 1e-6)
        cpu: dict[str, float] = {k: (c1[k] - c0[k]) / span for k in watch if not k.startswith("client")}
        cpu["client"] = sum(c1[k] - c0[k] for k in watch if k.startswith("client")) / span
        for r in results:
            if "exception" in r:
                raise RuntimeError(f"client process failed in {name}: {r['exception']}")
        ex = [r["exhausted_at"] for r in results if r["exhausted_at"] is not None]
        exhausted = bool(ex) and min(ex) < w1
        if exhausted:
            w1 = min(ex)
        lat: dict[str, list[float]] = defaultdict(list)
        for r in results:
            for kind, (tb, lb) in r["rec"].items():
                done, took = array("d"), array("d")
                done.frombytes(tb)
                took.frombytes(lb)
                lat[kind].extend(x for x, y in zip(took, done) if w0 <= y <= w1)
        errors: dict[str, int] = defaultdict(int)
        out: list = []
        for r in results:
            for k, v in r["errors"].items():
                errors[k] += v
            out.extend(r["out"])
        return PhaseResult(name, (w0, w1), dict(lat), dict(errors), out, cpu, exhausted)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
