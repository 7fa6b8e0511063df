"""Benchmark 5: the performer end to end (issue 4, "Measure").

Every actor is a real process, as in tests/test_performer_e2e.py: our own redis-server
(Task Manager store and rq queues), ``aiw server`` over it, Orthanc with DICOMweb as the
PACS, ``aiw performer agent`` and ``aiw performer worker`` processes (stock rq workers:
one forked work horse per job). Inputs are synthetic 3D FLAIR series
(performers.synthetic, 256×256×160 by default), stored in Orthanc before anything is timed.
The workitem is the one a requester builds (requester_cli.builder) for the reference model
``aiw-flair-lesions``, current series only.

Observation. The bench holds its own global subscription (upsrs.eventclient.EventChannel,
subscribed in ``on_connect``, i.e. after the channel is open, and created only once the
subscription is in place). End to end = from just before the create request is written to
the receipt of the workitem's COMPLETED State Report. Times of the rq job (enqueued_at,
started_at, ended_at, microsecond UTC) and its return value (performers.job ``Report``:
``seconds`` per stage and ``total``) come from the queue's Redis. All clocks are the one
system clock. End to end splits exactly into:

  create → enqueued       the create request, its event to the agent, the agent's retrieve
                          of the workitem and its enqueue (rq ``enqueued_at``)
  enqueued → horse        rq: the worker wakes from BLPOP, bookkeeping, ``os.fork()``, job
                          preparation, until the horse sets ``started_at``
  horse → Job.run         in the horse before ``Job.run`` starts (and the few ms after it
                          ends): import of performers.job, settings, asyncio.run, release
                          of the guard key = ended_at − started_at − total
  Job.run                 ``total``: eligibility (GET workitem, model registry), the stages,
                          the progress N-SETs before each stage
  job end → COMPLETED     COMPLETED seen − ended_at (negative: the event arrives while the
                          horse is still finishing)

Latency: 5 workitems one after another (after one warm-up), one worker, idle stack. With
``--compare TREE`` (a source tree, e.g. ``git archive`` of an earlier commit), 5 more
alternate with them on a worker run from that tree (its ``performers``, same stack and
PACS); the worker is swapped before each workitem, so both columns see the same machine and
a change to the performer is measured side by side.

Throughput: 20 workitems of 20 distinct stored studies, created at once (concurrent
POSTs over 8 connections); wall = first create sent → last COMPLETED seen; with 1 and 2
workers, repeated twice in the order 1, 2, 2, 1, … so drift cancels. The same input
studies serve every run (new workitems each time; each run's SEG and SR are new series).
CPU seconds per process (utime + stime + reaped children's, /proc/PID/stat) over each run,
and the whole machine's from /proc/stat, show whether the 2 cores are the limit.

``--quick``: 96×96×40 series, 2 + 2 latency workitems, 4 for throughput, one round.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis import Redis
from rq.job import Job as RqJob
from rq.worker import Worker

from bench import SERVER_ENV
from tests.orthanc import INSTALL_HINT, Orthanc, orthanc_available, start_orthanc
from tests.servers import REPO, RedisProcess, ServerProcess, descendants, start_redis, start_server, wait_until

STAGES = ("claim", "retrieve", "volume", "model", "encode", "store", "complete")
DATA = ("retrieve", "volume", "encode", "store")  # moving and converting the images, not orchestration
PARTS = ("create → enqueued", "enqueued → horse", "horse → Job.run", "Job.run", "job end → COMPLETED")
LESIONS = ("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
SHAPE = (256, 256, 160)
QUICK_SHAPE = (96, 96, 40)
TARGET_OVERHEAD_S = 1.5
TARGET_RATIO = 1.6


# ---------------------------------------------------------------------- processes


def _stop_tree(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGTERM the process group; after ``grace`` SIGKILL it and every descendant (rq's
    work horse sits in a process group of its own)."""
    if proc.poll() is not None:
        return
    kids = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    for pid in [*kids, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _cpu(pid: int) -> float:
    """CPU seconds of a process and of its reaped children (rq's work horses)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> dict[str, float]:
    """Whole-machine busy and steal CPU seconds (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / hz, "steal": steal / hz}


@dataclass
class Stack:
    tmp: Path
    redis: RedisProcess
    server: ServerProcess
    pacs: Orthanc
    env: dict[str, str]
    agent: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    started: int = 0

    @property
    def prefix(self) -> str:
        return self.env["AIW_QUEUE_PREFIX"]

    def queue_redis(self) -> Redis:
        return Redis.from_url(self.env["AIW_QUEUE_URL"])

    def _start(self, argv: list[str], name: str, tree: Path | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        env = self.env if tree is None else {**self.env, "PYTHONPATH": str(tree)}
        return subprocess.Popen(argv, cwd=tree or REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_agent(self) -> None:
        self.agent = self._start([sys.executable, "-m", "aiw.cli", "performer", "agent"], "agent")

    def set_workers(self, n: int, tree: Path | None = None) -> None:
        """Exactly ``n`` fresh workers, registered on the queues before this returns; run
        from the source tree ``tree`` instead of this one when given."""
        self.stop_workers()
        for _ in range(n):
            self.started += 1
            name = f"bench-w{self.started}-{os.getpid()}"
            argv = [sys.executable, "-m", "aiw.cli", "performer", "worker", "--name", name]
            self.workers.append(self._start(argv, f"worker{self.started}", tree))
        with self.queue_redis() as r:
            def registered() -> bool:
                for w in self.workers:
                    if w.poll() is not None:
                        raise RuntimeError(f"a worker exited with {w.returncode}; see {self.tmp}")
                return len(Worker.all(connection=r)) == n
            wait_until(registered, timeout=60, what=f"{n} rq workers")

    def stop_workers(self) -> None:
        for w in self.workers:
            _stop_tree(w)
        self.workers.clear()
        with self.queue_redis() as r:  # a worker stopped by SIGTERM deregisters; be sure
            wait_until(lambda: len(Worker.all(connection=r)) == 0, timeout=20, what="workers deregistered")

    def pids(self) -> dict[str, list[int]]:
        return {"server": [self.server.proc.pid], "redis": [self.redis.proc.pid], "orthanc": [self.pacs.process.pid],
                "agent": [self.agent.pid] if self.agent else [], "workers": [w.pid for w in self.workers],
                "bench": [os.getpid()]}

    def cpu(self) -> dict[str, float]:
        out = {k: sum(_cpu(p) for p in pids) for k, pids in self.pids().items()}
        out.update({f"machine_{k}": v for k, v in _machine_cpu().items()})
        out["t"] = time.monotonic()
        return out

    def stop(self) -> None:
        errors: list[BaseException] = []
        for step in (lambda: [_stop_tree(w) for w in self.workers],
                     lambda: self.agent is not None and _stop_tree(self.agent),
                     self.server.stop, self.pacs.stop, self.redis.stop):
            try:
                step()
            except BaseException as exc:  # keep stopping the rest
                errors.append(exc)
        if not os.environ.get("AIW_BENCH_KEEP_LOGS"):
            shutil.rmtree(self.tmp, ignore_errors=True)
        if errors:
            raise errors[0]


def start_stack() -> Stack:
    tmp = Path(tempfile.mkdtemp(prefix="aiw-bench-performer-"))
    started: list[Any] = []
    try:
        redis = start_redis()
        started.append(redis)
        pacs = start_orthanc(tmp / "orthanc")
        started.append(pacs)
        server = start_server(redis.url, extra_env=SERVER_ENV, log_dir=tmp)
        started.append(server)
    except BaseException:
        for p in reversed(started):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    (tmp / "work").mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIW_")}  # only what we set
    env = {**base, "AIW_UPS_URL": server.url, "AIW_QUEUE_URL": redis.url, "AIW_QUEUE_PREFIX": f"bench{server.port}",
           "AIW_AE_TITLE": f"PERF{server.port}", "AIW_MODELS": '["aiw-flair-lesions"]',
           "AIW_STOW_URL": pacs.dicomweb_url, "AIW_WORK_DIR": str(tmp / "work")}
    return Stack(tmp, redis, server, pacs, env)


# ---------------------------------------------------------------------- observing
class Observer:
    """A global subscriber: when each workitem's State Reports arrive (time.time())."""

    def __init__(self, ups_url: str, aet: str):
        from upsrs.client import UpsClient

        self.ups = UpsClient(ups_url)
        self.aet = aet
        self.seen: dict[str, dict[str, float]] = {}
        self.final: dict[str, asyncio.Future] = {}
        self.ready = asyncio.Event()
        self.channel: Any = None
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        from upsrs.eventclient import EventChannel

        async def subscribe() -> None:
            await self.ups.subscribe(self.aet)
            self.ready.set()

        self.channel = EventChannel(self.ups.channel_url(self.aet), on_connect=subscribe, on_cold_start=subscribe)
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.ready.wait(), 20)

    async def _run(self) -> None:
        from upsrs import events as ev

        async for event in self.channel:
            t = time.time()
            if event.type != ev.STATE_REPORT or not event.state:
                continue
            self.seen.setdefault(event.uid, {}).setdefault(event.state, t)
            if event.state in ("COMPLETED", "CANCELED"):
                fut = self.final.setdefault(event.uid, asyncio.get_running_loop().create_future())
                if not fut.done():
                    fut.set_result((event.state, t))

    async def wait_final(self, uid: str, timeout: float) -> tuple[str, float]:
        fut = self.final.setdefault(uid, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.ups.aclose()


def _ts(dt: Any) -> float:
    return dt.timestamp() if dt is not None else float("nan")


async def _job(stack: Stack, uid: str, timeout: float = 60.0) -> dict[str, Any]:
    """The rq job of a workitem once it has finished: timestamps and the job's report."""
    job_id = f"{stack.prefix}-{uid.replace('.', '_')}"  # performers.agent.job_id
    deadline = time.monotonic() + timeout
    with stack.queue_redis() as r:
        while True:
            job = RqJob.fetch(job_id, connection=r)
            status = job.get_status(refresh=True)
            if status in ("finished", "failed"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"rq job {job_id} still {status} after {timeout}s")
            await asyncio.sleep(0.05)
        job.refresh()
        report = job.return_value() if status == "finished" else None
    return {"status": status, "enqueued": _ts(job.enqueued_at), "started": _ts(job.started_at),
            "ended": _ts(job.ended_at), "report": report}


def _progress_text(doc: dict[str, Any]) -> str:
    items = (doc.get("00741002") or {}).get("Value") or [{}]
    return str(((items[0].get("00741006") or {}).get("Value") or [""])[0])


class Bench:
    def __init__(self, stack: Stack):
        self.stack = stack
        self.http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=8))
        self.observer = Observer(stack.server.url, f"BENCH{stack.server.port}")

    async def create(self, body: bytes) -> str:
        r = await self.http.post(f"{self.stack.server.url}/workitems", content=body,
                                 headers={"content-type": "application/dicom+json"})
        if r.status_code != 201:
            raise RuntimeError(f"create answered {r.status_code}: {r.text[:500]}")
        return r.headers["location"].rsplit("/", 1)[1]

    async def finish(self, uid: str, t0: float, timeout: float) -> dict[str, Any]:
        """Wait for COMPLETED (anything else is an error), then the job's record."""
        state, t_done = await self.observer.wait_final(uid, timeout)
        if state != "COMPLETED":
            doc = (await self.http.get(f"{self.stack.server.url}/workitems/{uid}")).json()[0]
            raise RuntimeError(f"workitem {uid} ended {state}: {_progress_text(doc)}")
        job = await _job(self.stack, uid)
        if job["status"] != "finished" or not job["report"] or job["report"]["outcome"] != "completed":
            raise RuntimeError(f"workitem {uid}: rq job {job['status']}: {job['report']}")
        rep = job["report"]
        sec = rep["seconds"]
        e2e = t_done - t0
        parts = {"create → enqueued": job["enqueued"] - t0,
                 "enqueued → horse": job["started"] - job["enqueued"],
                 "horse → Job.run": job["ended"] - job["started"] - sec["total"],
                 "Job.run": sec["total"],
                 "job end → COMPLETED": t_done - job["ended"]}
        seen = self.observer.seen.get(uid, {})
        return {"uid": uid, "t0": t0, "t_done": t_done, "e2e": e2e, "parts": parts, "seconds": sec,
                "job_other": sec["total"] - sum(sec.get(s, 0.0) for s in STAGES),
                "claim_seen_after_start": seen.get("IN PROGRESS", float("nan")) - (job["ended"] - sec["total"]),
                "overhead": e2e - sec["model"]}


# ---------------------------------------------------------------------- inputs
def _store_studies(stack: Stack, seeds: list[int], shape: tuple[int, int, int], spacing: tuple[float, float, float],
                   log: Any) -> list[bytes]:
    """Generate and STOW each study (not timed); the create bodies, one per study."""
    from performers import synthetic
    from performers.dicomweb import store_instances
    from requester_cli.builder import Procedure, build, study_from_datasets

    bodies = []
    t = time.monotonic()
    for n, seed in enumerate(seeds):
        study = synthetic.make_study(seed, shape=shape, spacing=spacing)
        stored = store_instances(stack.pacs.dicomweb_url, study.flair.datasets, timeout=120, retries=2)
        if len(stored) != len(study.flair.datasets):
            raise RuntimeError(f"Orthanc stored {len(stored)} of {len(study.flair.datasets)} instances")
        ref = study_from_datasets(study.flair.datasets, stack.pacs.dicomweb_url)
        doc = build(ref, Procedure(LESIONS, "MS lesion follow-up", worklist_label="AI", priority="MEDIUM"),
                    ref.series)
        bodies.append(json.dumps(doc).encode())
        if (n + 1) % 5 == 0 or n + 1 == len(seeds):
            log(f"  stored {n + 1}/{len(seeds)} studies ({time.monotonic() - t:.0f} s)")
    return bodies


# ---------------------------------------------------------------------- phases
async def _idle(seconds: float = 1.0) -> None:
    await asyncio.sleep(seconds)


def _cpu_delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    d = {k: b[k] - a[k] for k in a if k != "t"}
    window = b["t"] - a["t"]
    d["stack"] = sum(v for k, v in d.items() if not k.startswith("machine_"))
    d["others_cores"] = max(0.0, d["machine_busy"] - d["stack"]) / window
    return d


async def latency(b: Bench, pairs: list[tuple[bytes, bytes]], *, warmup: int, timeout: float,
                  compare: Path | None = None) -> dict[str, list[dict[str, Any]]]:
    """One workitem at a time; with ``compare``, alternating a worker of this tree and one
    of that tree (order this, compare, compare, this, …) so both see the same machine."""
    rows: dict[str, list[dict[str, Any]]] = {"stock": [], "compare": []}
    for n, pair in enumerate(pairs):
        kinds = ("stock",) if compare is None else ("stock", "compare") if n % 2 == 0 else ("compare", "stock")
        for kind in kinds:
            body = pair[0] if kind == "stock" else pair[1]
            b.stack.set_workers(1, compare if kind == "compare" else None)
            await _idle()
            cpu0 = b.stack.cpu()
            t0 = time.time()
            uid = await b.create(body)
            row = await b.finish(uid, t0, timeout)
            await asyncio.sleep(0.3)  # the horse is reaped: its CPU is in the worker's
            row["cpu"] = _cpu_delta(cpu0, b.stack.cpu())
            row["warmup"] = n < warmup
            rows[kind].append(row)
    return rows


async def throughput(b: Bench, bodies: list[bytes], workers: int, *, timeout: float) -> dict[str, Any]:
    stack = b.stack
    stack.set_workers(workers)
    await _idle(2.0)
    cpu0 = stack.cpu()
    t0 = time.time()
    uids = await asyncio.gather(*(b.create(body) for body in bodies))
    t_created = time.time()
    rows = await asyncio.gather(*(b.finish(uid, t0, timeout) for uid in uids))
    await asyncio.sleep(0.3)  # the last horse is reaped: its CPU is in the worker's
    cpu1 = stack.cpu()
    wall = max(r["t_done"] for r in rows) - t0
    window = cpu1["t"] - cpu0["t"]
    cpu = {k: (cpu1[k] - cpu0[k]) for k in cpu0 if k != "t"}
    ours = sum(v for k, v in cpu.items() if not k.startswith("machine_"))
    return {"workers": workers, "n": len(rows), "wall_s": wall, "per_item_s": wall / len(rows),
            "create_all_s": t_created - t0, "cpu_window_s": window,
            "cores": {k: v / window for k, v in cpu.items()},
            "cores_stack": ours / window, "cores_others": max(0.0, cpu["machine_busy"] - ours) / window,
            "cpu_s_per_item": ours / len(rows),
            "mean_seconds": {s: statistics.fmean(r["seconds"][s] for r in rows) for s in (*STAGES, "total")},
            "mean_e2e_s": statistics.fmean(r["e2e"] for r in rows),
            "mean_queue_s": statistics.fmean(r["parts"]["create → enqueued"] + r["parts"]["enqueued → horse"]
                                             for r in rows)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for r in rows if not r["warmup"]]

    def stat(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {"n": len(rows),
            "stages": {s: stat([r["seconds"][s] for r in rows]) for s in (*STAGES, "total")},
            "job_other": stat([r["job_other"] for r in rows]),
            "parts": {p: stat([r["parts"][p] for r in rows]) for p in PARTS},
            "e2e": stat([r["e2e"] for r in rows]),
            "overhead": stat([r["overhead"] for r in rows]),
            "data": stat([sum(r["seconds"][k] for k in DATA) for r in rows]),
            "orchestration": stat([r["overhead"] - sum(r["seconds"][k] for k in DATA) for r in rows]),
            "claim_seen_after_start": stat([r["claim_seen_after_start"] for r in rows]),
            "cpu_s": {k: stat([r["cpu"][k] for r in rows]) for k in rows[0]["cpu"]}}


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run(*, quick: bool = False, latency_n: int | None = None, throughput_n: int | None = None,
        rounds: int | None = None, compare: Path | None = None, latency_only: bool = False,
        log: Any = print) -> dict[str, Any]:
    """The latency (and, unless ``latency_only``, throughput) benchmark; ``compare``: a
    source tree whose worker alternates with this tree's in the latency runs."""
    if not orthanc_available():
        return {"skipped": f"Orthanc with the DICOMweb plugin is not installed ({INSTALL_HINT})"}
    shape = QUICK_SHAPE if quick else SHAPE
    spacing = (1.5, 1.5, 2.0) if quick else (1.0, 1.0, 1.0)
    latency_n = latency_n or (2 if quick else 5)
    throughput_n = throughput_n or (4 if quick else 20)
    rounds = rounds or (1 if quick else 2)
    warmup = 1
    timeout = 120.0 if quick else 300.0
    # SIGTERM ends the run through the finally blocks below, like Ctrl-C: nothing we started survives
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        stack = start_stack()
    except BaseException:
        signal.signal(signal.SIGTERM, previous)
        raise
    try:
        log(f"  stack up: server {stack.server.url}, Orthanc {stack.pacs.url}, logs {stack.tmp}")
        n_lat = warmup + latency_n
        n_cmp = n_lat if compare else 0
        n_tp = 0 if latency_only else throughput_n
        bodies = _store_studies(stack, list(range(1000, 1000 + n_lat + n_cmp + n_tp)), shape, spacing, log)
        lat_bodies, cmp_bodies, tp_bodies = bodies[:n_lat], bodies[n_lat:n_lat + n_cmp], bodies[n_lat + n_cmp:]
        stack.start_agent()
        res = asyncio.run(_measure(stack, lat_bodies, cmp_bodies, tp_bodies, warmup=warmup, rounds=rounds,
                                   timeout=timeout, compare=compare, log=log))
    finally:
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
    res.update({"shape": shape, "spacing": spacing, "instances": shape[2],
                "series_mib": shape[0] * shape[1] * shape[2] * 2 / 2**20, "quick": quick, "nproc": os.cpu_count(),
                "compare_tree": str(compare) if compare else None})
    return res


async def _measure(stack: Stack, lat_bodies: list[bytes], cmp_bodies: list[bytes], tp_bodies: list[bytes], *,
                   warmup: int, rounds: int, timeout: float, compare: Path | None, log: Any) -> dict[str, Any]:
    b = Bench(stack)
    try:
        await b.observer.start()
        log(f"  latency: {len(lat_bodies) - warmup} workitems one at a time (+{warmup} warm-up), 1 worker"
            + (f", alternating with as many on a worker of {compare}" if compare else ""))
        pairs = list(zip(lat_bodies, cmp_bodies)) if compare else [(body, b"") for body in lat_bodies]
        lat = await latency(b, pairs, warmup=warmup, timeout=timeout, compare=compare)
        res: dict[str, Any] = {"latency": _summary(lat["stock"]), "latency_rows": lat["stock"]}
        if compare:
            res.update({"compare": _summary(lat["compare"]), "compare_rows": lat["compare"]})
        if not tp_bodies:
            return res
        order = [w for r in range(rounds) for w in ((1, 2) if r % 2 == 0 else (2, 1))]
        runs = []
        for workers in order:
            log(f"  throughput: {len(tp_bodies)} workitems at once, {workers} worker(s)")
            runs.append(await throughput(b, tp_bodies, workers, timeout=timeout + 60 * len(tp_bodies)))
            log(f"    {runs[-1]['wall_s']:.1f} s, stack {runs[-1]['cores_stack']:.2f} cores, "
                f"others {runs[-1]['cores_others']:.2f}")
        res["throughput"] = runs
        wall = {w: sum(r["wall_s"] for r in runs if r["workers"] == w) for w in (1, 2)}
        res["ratio"] = wall[1] / wall[2]
        res["ratios_by_round"] = [runs[2 * i + (0 if order[2 * i] == 1 else 1)]["wall_s"]
                                  / runs[2 * i + (1 if order[2 * i] == 1 else 0)]["wall_s"] for i in range(rounds)]
        return res
    finally:
        stack.stop_workers()
        await b.observer.close()
        await b.http.aclose()


# ---------------------------------------------------------------------- report
def _f(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def markdown(res: dict[str, Any]) -> str:
    if "skipped" in res:
        return f"Skipped: {res['skipped']}."
    shape = "×".join(str(v) for v in res["shape"])
    cols = [("this tree", res["latency"])]
    if "compare" in res:
        cols.append((f"compared tree ({res['compare_tree']})", res["compare"]))
    lat = res["latency"]

    def cell(s: dict[str, float], d: int = 2) -> str:
        return f"{_f(s['median'], d)} ({_f(s['min'], d)}–{_f(s['max'], d)})"

    def row(name: str, pick: Any, bold: bool = False) -> str:
        cells = [cell(pick(c)) for _, c in cols]
        if bold:
            cells[0] = f"**{cells[0]}**"
        return f"| {name} | " + " | ".join(cells) + " |"

    head = "| {} | " + " | ".join(n for n, _ in cols) + " |"
    rule = "|---|" + "---:|" * len(cols)
    out = [f"Input: one synthetic 3D FLAIR series, {shape} ({res['instances']} MR instances, "
           f"{res['series_mib']:.0f} MiB of pixels), stored in Orthanc beforehand. Model `aiw-flair-lesions`. "
           "End to end = create request sent → COMPLETED State Report received by a global event subscriber.", "",
           f"**Latency**: {lat['n']} workitems one after another on an otherwise idle stack, 1 worker, after 1 "
           "warm-up; medians (min–max) in seconds."
           + (" The compared tree's worker alternates with this tree's, workitem by workitem, on the same stack, "
              "so both columns saw the same machine." if len(cols) > 1 else ""), "",
           head.format("stage (performers.job Report)"), rule]
    for s in (*STAGES, "total"):
        out.append(row(s, lambda c, s=s: c["stages"][s]))
    out.append(row("Job.run outside the stages (eligibility check, progress N-SETs)", lambda c: c["job_other"]))
    out += ["", head.format("end to end, by part"), rule]
    for p in PARTS:
        out.append(row(p, lambda c, p=p: c["parts"][p]))
    ok = lat["overhead"]["median"] <= TARGET_OVERHEAD_S
    out += [row("**end to end**", lambda c: c["e2e"], bold=True),
            row(f"**overhead = end to end − model** (target ≤ {TARGET_OVERHEAD_S} s: "
                f"{'PASS' if ok else 'FAIL'})", lambda c: c["overhead"], bold=True),
            row("of which data stages (retrieve + volume + encode + store)", lambda c: c["data"]),
            row("of which orchestration proper (the rest)", lambda c: c["orchestration"]),
            row("stack CPU s per workitem", lambda c: c["cpu_s"]["stack"]),
            row("of which the worker with its horse", lambda c: c["cpu_s"]["workers"]),
            row("other processes on the machine meanwhile (cores)", lambda c: c["cpu_s"]["others_cores"]), ""]
    if "throughput" not in res:
        return "\n".join(out) + "\n"
    runs = res["throughput"]
    n = runs[0]["n"]
    ok = res["ratio"] >= TARGET_RATIO
    out += [f"**Throughput**: {n} workitems ({n} distinct studies) created at once; wall = first create sent → "
            f"last COMPLETED seen. Runs in the order {', '.join(str(r['workers']) for r in runs)} workers; stock workers.",
            "", "| workers | wall s | workitems/min | mean end to end s | mean wait before the horse s | "
            "mean model s/job | mean Job.run s/job | stack CPU s/workitem | stack cores | other processes cores |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        out.append(f"| {r['workers']} | {_f(r['wall_s'], 1)} | {_f(60 * r['n'] / r['wall_s'], 1)} | "
                   f"{_f(r['mean_e2e_s'], 1)} | {_f(r['mean_queue_s'], 1)} | {_f(r['mean_seconds']['model'])} | "
                   f"{_f(r['mean_seconds']['total'])} | {_f(r['cpu_s_per_item'])} | {_f(r['cores_stack'])} | "
                   f"{_f(r['cores_others'])} |")
    cores = {w: statistics.fmean(r["cores_stack"] for r in runs if r["workers"] == w) for w in (1, 2)}
    out += ["", f"**2 workers / 1 worker = {_f(res['ratio'])}×** (sum of walls; per round: "
                f"{', '.join(_f(x) + '×' for x in res['ratios_by_round'])}); target ≥ {TARGET_RATIO}×: "
                f"**{'PASS' if ok else 'FAIL'}**. The stack obtained {_f(cores[2])} cores with 2 workers and "
                f"{_f(cores[1])} with 1 (×{_f(cores[2] / cores[1])}).", "",
            "CPU by process over each throughput run (cores = CPU seconds / wall; workers include their reaped work horses):",
            "", "| workers | server | redis | Orthanc | agent | workers | bench (creates, subscriber) | stack total | "
                "machine busy | steal |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        c = r["cores"]
        out.append(f"| {r['workers']} | {_f(c['server'])} | {_f(c['redis'])} | {_f(c['orthanc'])} | {_f(c['agent'])} | "
                   f"{_f(c['workers'])} | {_f(c['bench'])} | {_f(r['cores_stack'])} | {_f(c['machine_busy'])} | "
                   f"{_f(c['machine_steal'])} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--compare", type=Path, help="a source tree whose worker alternates with this one's (latency)")
    ap.add_argument("--latency-only", action="store_true", help="skip the throughput runs")
    ap.add_argument("--latency-n", type=int, help="latency workitems (default 5, quick 2)")
    a = ap.parse_args()
    r = run(quick=a.quick, compare=a.compare, latency_only=a.latency_only, latency_n=a.latency_n)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1, default=str))
    print(markdown(r))
