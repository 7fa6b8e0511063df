"""CPU per request of each hot transaction, with the ASGI app called directly.

No HTTP and no client processes: the Task Manager app (and the bare app of
``bench/bare_app.py`` as the yardstick) is called in this process by a few concurrent
callers over its own redis-server, and the process's CPU time is divided by the number of
requests. The throughput benchmark's ratio mixes this cost with uvicorn's and with what the
neighbours leave of the machine; this isolates ours, so a change to the hot path can be
weighed in minutes. The time the cycle collector takes is reported beside it
(``gc.callbacks``). ``aiw server`` tunes the collector once started (``ups_server.gctune``)
and fixes glibc's heap thresholds (``ups_server.memtrim.keep_heap``); so does this harness,
when the tree it runs has them.

    python -m bench.inprocess                     # 5 rounds of 1,000 requests per transaction
    PYTHONPATH=/tmp/before python bench/inprocess.py --rounds 5   # another tree's app, same harness

Each line gives the minimum and the median over the rounds (the minimum is the steadier on
a shared machine) and the collector's share.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.workload import CODES, make_workitem, q
from tests.factory import progress, state
from tests.servers import start_redis
from upsrs.uids import new_uid

ASGI = Callable[..., Awaitable[None]]
KINDS = ("bare", "create", "retrieve", "search10", "search50", "claim", "update")


async def call(app: ASGI, method: str, path: str, body: bytes = b"") -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request through ``app`` as uvicorn would present it."""
    p, _, qs = path.partition("?")
    headers = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench")]
    if body:
        headers += [(b"content-type", b"application/dicom+json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5555), "scheme": "http", "method": method,
             "root_path": "", "path": p, "raw_path": p.encode(), "query_string": qs.encode(), "headers": headers,
             "state": {}}
    sent = False
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"], out["headers"] = msg["status"], msg["headers"]
        else:
            out["body"] += msg.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


class Harness:
    """The apps, the workload and the workitems the phases hand on to each other."""

    def __init__(self, app: ASGI, bare: ASGI, callers: int):
        self.app, self.bare, self.callers = app, bare, callers
        rng = random.Random(5)
        self.bodies = [orjson.dumps(make_workitem(rng, i)) for i in range(300)]
        self.progress = [orjson.dumps(progress(p, f"stage {p // 25 + 1} of 4")) for p in range(5, 100, 5)]
        self.scheduled: list[str] = []
        self.claimed: list[tuple[str, str]] = []

    async def one(self, kind: str, i: int) -> None:
        if kind == "bare":
            status, _, _ = await call(self.bare, "GET", "/bare")
        elif kind == "create":
            status, headers, _ = await call(self.app, "POST", "/workitems", self.bodies[i % len(self.bodies)])
            self.scheduled.append(dict(headers)[b"location"].decode().rsplit("/", 1)[1])
        elif kind == "retrieve":
            status, _, _ = await call(self.app, "GET", f"/workitems/{self.scheduled[i % len(self.scheduled)]}")
        elif kind in ("search10", "search50"):
            code = CODES[i % len(CODES) if kind == "search10" else 0][0]
            status, _, _ = await call(self.app, "GET", q(ProcedureStepState="SCHEDULED", limit=kind[6:],
                                                         **{"ScheduledWorkitemCodeSequence.CodeValue": code}))
            status = 200 if status == 204 else status
        elif kind == "claim":
            uid, tuid = self.scheduled.pop(), new_uid()
            status, _, _ = await call(self.app, "PUT", f"/workitems/{uid}/state", orjson.dumps(state("IN PROGRESS", tuid)))
            self.claimed.append((uid, tuid))
        else:
            uid, tuid = self.claimed[i % len(self.claimed)]
            status, _, _ = await call(self.app, "POST", f"/workitems/{uid}?transaction-uid={tuid}",
                                      self.progress[i % len(self.progress)])
        if status not in (200, 201):
            raise RuntimeError(f"{kind}: HTTP {status}")

    async def phase(self, kind: str, n: int) -> tuple[float, float]:
        """(CPU µs per request, collector µs per request) of ``n`` requests of ``kind``."""
        todo = iter(range(n))
        spent = {"gc": 0.0, "start": 0.0}

        def collector(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                spent["start"] = time.perf_counter()
            else:
                spent["gc"] += time.perf_counter() - spent["start"]

        async def caller() -> None:
            for i in todo:
                await self.one(kind, i)

        gc.callbacks.append(collector)
        t0 = time.process_time()
        try:
            await asyncio.gather(*(caller() for _ in range(self.callers)))
        finally:
            gc.callbacks.remove(collector)
        return (time.process_time() - t0) / n * 1e6, spent["gc"] / n * 1e6


async def main(rounds: int, n: int, callers: int, kinds: list[str]) -> None:
    redis = start_redis()
    try:
        os.environ.update({"AIW_REDIS_URL": redis.url, "AIW_LOG_JSON": "true",
                           "AIW_LOG_FILE": os.path.join(tempfile.mkdtemp(prefix="aiw-inprocess-"), "server.log")})
        from bench.bare_app import create_app as bare_app
        from ups_server.app import create_app

        app = create_app()
        h = Harness(app, bare_app(redis.url), callers)
        async with _lifespan(app):
            await h.phase("create", 200)  # warm-up: connections, scripts, caches
            try:
                from ups_server.gctune import tune_for_serving
            except ImportError:  # a tree from before the collector was tuned
                tuned = "default collector"
            else:
                tune_for_serving()
                tuned = "collector tuned as aiw server does"
            try:
                from ups_server.memtrim import keep_heap
            except ImportError:  # a tree from before the heap was kept
                pass
            else:
                keep_heap()
                tuned += ", heap kept"
            claims = rounds * n if "claim" in kinds else 0
            if claims:
                await h.phase("create", claims + 100)  # enough SCHEDULED workitems for every claim round
            if "update" in kinds and "claim" not in kinds:
                await h.phase("claim", 200)
            results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
            for _ in range(rounds):
                for kind in kinds:
                    results[kind].append(await h.phase(kind, n))
        print(f"CPU µs per request ({rounds} rounds of {n}, {callers} callers; {tuned})")
        for kind, got in results.items():
            cpu = sorted(c for c, _ in got)
            print(f"{kind:10s} min {cpu[0]:6.0f}  median {cpu[len(cpu) // 2]:6.0f}  "
                  f"collector {sum(g for _, g in got) / len(got):5.1f}  rounds {' '.join(f'{c:.0f}' for c, _ in got)}")
    finally:
        redis.stop()


class _lifespan:
    """The app's lifespan (the event fan-out and its loops run as in a server)."""

    def __init__(self, app: ASGI):
        self.app = app
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()

    async def __aenter__(self) -> None:
        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "lifespan.startup.complete":
                self.started.set()
            elif msg["type"] == "lifespan.shutdown.complete":
                self.stopped.set()

        await self.queue.put({"type": "lifespan.startup"})
        self.task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                 self.queue.get, send))
        await self.started.wait()

    async def __aexit__(self, *exc: object) -> None:
        await self.queue.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self.stopped.wait(), 10)
        await self.task


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000, help="requests per transaction per round")
    ap.add_argument("--callers", type=int, default=8, help="concurrent callers")
    ap.add_argument("--only", action="append", choices=KINDS, help="transactions to measure (repeatable)")
    a = ap.parse_args()
    import uvloop

    uvloop.run(main(a.rounds, a.n, a.callers, a.only or list(KINDS)))
