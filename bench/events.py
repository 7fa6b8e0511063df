"""Benchmark 4: event delivery. Lag from a state change to its receipt by every connected
global subscriber, against a bare ``websockets`` broadcast server (the ceiling), and
recovery after a kill -9 of the server with a thousand subscribers connected.

Lag. A fresh Redis and ``aiw server`` per subscriber count N (1, 100, 1,000); N AE titles
subscribe globally through the API, then each opens its event channel from the subscriber
processes (bench/subscribers.py). A producer (the load generator's processes) creates and
claims workitems through the HTTP API on a fixed schedule: RATE state changes per second,
a create (SCHEDULED) and 1/RATE later its claim (IN PROGRESS). The workitems name no
Scheduled Station, so each state change makes exactly one event, a UPS State Report. The
producer notes ``time.monotonic()`` just before it writes each request; a subscriber notes
it when the bytes of the event arrive; an event is matched to its request by what the
standard puts in it: Event Type ID, Affected SOP Instance UID (the workitem) and Procedure
Step State. Nothing is added to the messages. Lag = receipt - request send time, so it
includes the HTTP request itself (the commit happens inside it): an upper bound of
commit → receipt. Every (event, subscriber) pair of the measured window counts; a pair
never received within the drain time counts as infinitely late.

The ceiling: bench/broadcast.py, the same N clients (same processes, same client code),
the same message bytes at the same rate, timed from just before each message is built.

Recovery. 1,000 subscribers (the lean client, reconnecting with ``EventChannel``'s
backoff) connected to a fresh server; the producer runs throughout; after PRE seconds the
server is killed (SIGKILL) and started again on the same port over the same Redis (same
command, environment and log as ``tests.servers.start_server``); the producer keeps going
for POST seconds (its requests fail while the server is down; it reopens its connection at
its next slot). Then every event the Redis stream holds after the phase began (what a
global subscriber is owed: entries addressed to everyone or to all subscribers) must reach
every subscriber within DRAIN seconds: missing (subscriber, event) pairs are counted.
Caught up: a subscriber is caught up from the moment after which no event reaches it later
than CATCHUP_S after its commit (the time in its stream entry ID); all caught up = the
latest such moment over the subscribers, from the kill. Run twice (RECOVERIES): at 20
changes/s after 25 s, so that the delivery cursors have advanced as on a long-lived
connection (they confirm after heartbeat interval + timeout + 1 s = 21 s), and at the lag
benchmark's 100 changes/s after 10 s.
"""

from __future__ import annotations

import asyncio
import math
import random
import signal
import threading
import time
from typing import Any

import httpx
import numpy as np
import orjson

from bench import Env, start_env
from bench.loadgen import BadStatus, Ctx, Pool, percentile, proc_cpu
from bench.subscribers import Key, SubPool, event_key, raise_nofile
from bench.workload import make_workitem
from tests.factory import state
from tests.servers import REPO, ServerProcess, free_port, wait_until
from upsrs.uids import GLOBAL_SUBSCRIPTION, new_uid

TARGET_P99_MS = 50.0
RATE = 100.0  # state changes per second
PRODUCER_CONNECTIONS = 4
CATCHUP_S = 1.0
E = "bench.events"


# ---------------------------------------------------------------- the producer (client processes)
def producer_setup(params: dict[str, Any], worker: int) -> dict[str, Any]:
    """Pre-encoded create bodies: the benchmark's realistic AI workitems without a
    Scheduled Station Name (so a create makes one event, its State Report)."""
    rng = random.Random(2000 + worker)
    params = dict(params)
    bodies = []
    for i in range(50):
        wi = make_workitem(rng, i)
        wi["00404025"] = {"vr": "SQ"}
        bodies.append(orjson.dumps(wi))
    params["create_bodies"] = bodies
    return params


async def paced(ctx: Ctx) -> None:
    """One workitem on the shared schedule: connection i of C takes workitems i, i+C, ...;
    workitem j is created at t0 + 2j/rate and claimed at t0 + (2j+1)/rate (or as soon as
    its create has answered). With ``resilient``, a failed request (server down) is
    dropped and the connection reopened at its next slot."""
    p = ctx.params
    st = p.setdefault(("conn", ctx.index), {"k": 0, "broken": False})
    j = ctx.index + st["k"] * p["connections"]
    st["k"] += 1
    uid: str | None = None
    for step in (0, 1):
        slot = p["t0"] + (2 * j + step) / p["rate"]
        if slot >= ctx.deadline:
            await asyncio.sleep(max(0.0, ctx.deadline - time.monotonic()))
            return
        delay = slot - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if step == 1 and uid is None:
            return
        if st["broken"]:
            try:
                await ctx.conn.open()
                st["broken"] = False
            except OSError:
                return
        c = ctx.conn
        t = time.monotonic()
        try:
            if step == 0:
                bodies = p["create_bodies"]
                _, head, _ = await ctx.call("create", c.build("POST", "/workitems", bodies[j % len(bodies)]), (201,))
                loc = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"location:"))
                uid = loc.decode().rsplit("/", 1)[1].strip()
                ctx.out.append((uid, "SCHEDULED", t, time.monotonic()))
            else:
                await ctx.call("claim", c.build("PUT", f"/workitems/{uid}/state",
                                                orjson.dumps(state("IN PROGRESS", new_uid()))), (200,))
                ctx.out.append((uid, "IN PROGRESS", t, time.monotonic()))
        except (OSError, asyncio.IncompleteReadError, BadStatus):
            if not p.get("resilient"):
                raise
            c.close()
            st["broken"] = True
            return


# ---------------------------------------------------------------- helpers (parent)
async def _subscribe(url: str, aets: list[str]) -> None:
    sem = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=url, timeout=30) as h:
        async def one(aet: str) -> None:
            async with sem:
                r = await h.post(f"/workitems/{GLOBAL_SUBSCRIPTION}/subscribers/{aet}?deletionlock=false")
                if r.status_code != 201:
                    raise RuntimeError(f"subscribe {aet}: {r.status_code} {r.text[:200]}")

        await asyncio.gather(*(one(a) for a in aets))


def subscribe_all(url: str, aets: list[str]) -> None:
    asyncio.run(_subscribe(url, aets))


def _connections(url: str) -> int:
    return int(httpx.get(f"{url}/healthz", timeout=5).json()["connections"])


def aets_for(n: int) -> list[str]:
    return [f"SUB{i:05d}" for i in range(n)]


def lag_stats(sent: dict[Key, float], got: dict[str, Any], window: tuple[float, float], n: int) -> dict[str, Any]:
    """Lag of every (event sent in the window, subscriber) pair; never received = infinite."""
    w0, w1 = window
    keys = got["keys"]
    send = np.array([sent.get(k, np.nan) for k in keys] or [np.nan])
    st = send[got["key"]] if len(got["key"]) else np.array([])
    ok = (st >= w0) & (st <= w1)
    lags = (got["t"] - st)[ok]
    events = sum(1 for t in sent.values() if w0 <= t <= w1)
    expected = events * n
    missing = expected - len(lags)
    s = np.sort(lags)

    def pct(p: float) -> float:
        if expected == 0:
            return float("nan")
        i = min(expected - 1, max(0, round(p / 100 * (expected - 1))))
        return float(s[i]) * 1000 if i < len(s) else float("inf")

    # fan-out spread: for each event, last receipt - first receipt over the subscribers
    spread = float("nan")
    if n > 1 and len(lags):
        kk = got["key"][ok]
        order = np.argsort(kk, kind="stable")
        kk, tt = kk[order], got["t"][ok][order]
        bounds = np.flatnonzero(np.diff(kk)) + 1
        first = np.minimum.reduceat(tt, np.r_[0, bounds])
        last = np.maximum.reduceat(tt, np.r_[0, bounds])
        spread = float(np.percentile(last - first, 50)) * 1000
    return {"events": events, "pairs": expected, "received": len(lags), "missing": int(missing),
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": pct(100),
            "spread_p50_ms": spread}


# ---------------------------------------------------------------- the ceiling process
class Broadcaster:
    def __init__(self, log_dir: Any):
        import subprocess
        import sys

        self.port = free_port()
        out = open(log_dir / f"broadcast-{self.port}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.broadcast", "--port", str(self.port)], cwd=REPO,
                                     stdout=out, stderr=subprocess.STDOUT)
        wait_until(lambda: self.get("/healthz") is not None, what=f"broadcast server :{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        if self.proc.poll() is not None:
            raise RuntimeError(f"broadcast server exited with {self.proc.returncode}")
        r = httpx.get(self.url + path, timeout=10)
        return r.json() if r.status_code == 200 else None

    def connections(self) -> int:
        return int(self.get("/healthz")["connections"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# ---------------------------------------------------------------- phases
def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for k, pid in pids.items():
        try:
            out[k] = proc_cpu(pid)
        except OSError:
            out[k] = 0.0
    return out


def aiw_lag(pool: Pool, subs: SubPool, n: int, *, rate: float, seconds: float, warmup: float, drain: float,
            profile_hook: Any = None) -> dict[str, Any]:
    env = start_env()
    try:
        aets = aets_for(n)
        subscribe_all(env.server.url, aets)
        opened = subs.connect(f"ws://127.0.0.1:{env.server.port}/subscribers/", aets)
        if opened != n:
            raise RuntimeError(f"only {opened} of {n} channels opened")
        wait_until(lambda: _connections(env.server.url) == n, what=f"{n} channels on the server")
        subs.reset()
        watch = {"server": env.server.proc.pid, "redis": env.redis.proc.pid,
                 **{f"sub{i}": pid for i, pid in enumerate(subs.pids)}}
        if profile_hook:
            profile_hook(f"events-{n}", "start", env)
        r = pool.run(f"events aiw x{n}", "127.0.0.1", env.server.port, f"{E}:paced",
                     connections=PRODUCER_CONNECTIONS, duration=seconds, warmup=warmup, lead=1.0,
                     setup=f"{E}:producer_setup", watch=watch,
                     params={"rate": rate, "t0": time.monotonic() + 1.05, "connections": PRODUCER_CONNECTIONS})
        if profile_hook:
            profile_hook(f"events-{n}", "stop", env)
        sent = {(1, uid, st): t for uid, st, t, _ in r.out}
        done = subs.wait(list(sent), timeout=drain)
        got = subs.collect()
        subs.close_all()
        res = lag_stats(sent, got, r.window, n)
        res.update(side="aiw", subscribers=n, rate=sum(1 for _, _, t, _ in r.out if r.window[0] <= t <= r.window[1]) / r.seconds,
                   drained=done["complete"], drain_s=done["at"] - r.window[1], dups=got["dups"],
                   http={k: {"p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000}
                         for k, v in r.latencies.items()},
                   errors=r.errors, server_cpu=r.cpu["server"], redis_cpu=r.cpu["redis"],
                   sub_cpu=sum(v for k, v in r.cpu.items() if k.startswith("sub")), producer_cpu=r.cpu["client"],
                   server_5xx=env.server_errors())
        _print(res)
        return res
    finally:
        env.stop()


def ceiling_lag(subs: SubPool, b: Broadcaster, n: int, *, rate: float, seconds: float, warmup: float,
                drain: float) -> dict[str, Any]:
    aets = aets_for(n)
    wait_until(lambda: b.connections() == 0, what="broadcast server idle")
    opened = subs.connect(f"ws://127.0.0.1:{b.port}/subscribers/", aets)
    if opened != n:
        raise RuntimeError(f"only {opened} of {n} broadcast channels opened")
    wait_until(lambda: b.connections() == n, what=f"{n} channels on the broadcast server")
    subs.reset()
    watch = {"server": b.proc.pid, **{f"sub{i}": pid for i, pid in enumerate(subs.pids)}}
    at = time.monotonic() + 0.5
    b.get(f"/start?at={at}&rate={rate}&seconds={warmup + seconds}")
    w0, w1 = at + warmup, at + warmup + seconds
    time.sleep(max(0.0, w0 - time.monotonic()))
    c0, t0 = _cpu(watch), time.monotonic()
    time.sleep(max(0.0, w1 - time.monotonic()))
    c1, t1 = _cpu(watch), time.monotonic()
    log = None
    while log is None:
        time.sleep(0.05)
        log = b.get("/log")
    sent = {(1, uid, st): t for uid, st, t in log["log"]}
    done = subs.wait(list(sent), timeout=drain)
    got = subs.collect()
    subs.close_all()
    cpu = {k: (c1[k] - c0[k]) / (t1 - t0) for k in watch}
    res = lag_stats(sent, got, (w0, w1), n)
    res.update(side="ceiling", subscribers=n, rate=sum(1 for t in sent.values() if w0 <= t <= w1) / seconds,
               drained=done["complete"], drain_s=done["at"] - w1, dups=got["dups"], server_cpu=cpu["server"],
               sub_cpu=sum(v for k, v in cpu.items() if k.startswith("sub")))
    _print(res)
    return res


def restart(env: Env, timeout: float = 120.0) -> tuple[float, float]:
    """Start ``aiw server`` again as ``tests.servers.start_server`` did (same port, prefix,
    environment and log), without its 15 s limit: a server replaying to a thousand
    reconnecting subscribers may answer /healthz late. Returns (monotonic time it accepts
    TCP connections, time /healthz answers)."""
    import socket
    import subprocess
    import sys

    old = env.server
    out = open(old.log, "ab") if old.log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "aiw.cli", "server", "--port", str(old.port)], cwd=REPO,
                            env=old.env, stdout=out, stderr=subprocess.STDOUT)
    env.server = ServerProcess(old.port, proc, old.redis_url, old.env, old.log)
    deadline = time.monotonic() + timeout
    t_listen = None
    while t_listen is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"aiw server did not come back (exit {proc.returncode}); see {old.log}")
        try:
            socket.create_connection(("127.0.0.1", old.port), timeout=0.5).close()
            t_listen = time.monotonic()
        except OSError:
            time.sleep(0.01)
    while True:
        try:
            if httpx.get(f"{env.server.url}/healthz", timeout=5).status_code == 200:
                return t_listen, time.monotonic()
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"aiw server did not answer /healthz (exit {proc.returncode}); see {old.log}")
        time.sleep(0.05)


def recovery(pool: Pool, subs: SubPool, n: int, *, rate: float, pre: float, post: float,
             drain: float, profile_hook: Any = None) -> dict[str, Any]:
    env = start_env()
    try:
        aets = aets_for(n)
        subscribe_all(env.server.url, aets)
        port, url = env.server.port, env.server.url
        opened = subs.connect(f"ws://127.0.0.1:{port}/subscribers/", aets, reconnect=True)
        if opened != n:
            raise RuntimeError(f"only {opened} of {n} channels opened")
        wait_until(lambda: _connections(url) == n, what=f"{n} channels on the server")
        rc = env.redis.client()
        events_key = f"{env.prefix}events"
        last = rc.xrevrange(events_key, count=1)
        marker = last[0][0].decode() if last else "0-0"
        subs.reset()
        box: dict[str, Any] = {}
        t0 = time.monotonic() + 1.05

        def produce() -> None:
            try:
                box["r"] = pool.run("events recovery", "127.0.0.1", port, f"{E}:paced",
                                    connections=PRODUCER_CONNECTIONS, duration=pre + post, warmup=0.0, lead=1.0,
                                    setup=f"{E}:producer_setup",
                                    params={"rate": rate, "t0": t0, "connections": PRODUCER_CONNECTIONS,
                                            "resilient": True})
            except Exception as exc:  # reported below
                box["error"] = exc

        th = threading.Thread(target=produce, daemon=True)
        th.start()
        time.sleep(max(0.0, t0 + pre - time.monotonic()))
        sub_pids = {f"sub{i}": pid for i, pid in enumerate(subs.pids)}
        c_kill = _cpu(sub_pids)
        t_kill = time.monotonic()
        env.server.stop(signal.SIGKILL)
        t_listen, t_up = restart(env)
        name = f"events-recovery-{rate:.0f}"
        if profile_hook:
            profile_hook(name, "start", env)
        th.join()
        if "error" in box:
            raise box["error"]
        produced = box["r"]
        offset = time.time() - time.monotonic()
        entries = rc.xrange(events_key, f"({marker}", "+")
        owed: list[Key] = []
        commit: list[float] = []
        for sid, f in entries:
            if f.get(b"to", b"") not in (b"", b"*"):
                continue
            owed.append(event_key(int(f[b"type"]), f[b"uid"].decode(), orjson.loads(f[b"body"])))
            commit.append(int(sid.split(b"-")[0]) / 1000 - offset)
        done = subs.wait(owed, timeout=drain)
        c_done, server_cpu = _cpu(sub_pids), proc_cpu(env.server.proc.pid)
        span = done["at"] - t_kill
        if profile_hook:
            profile_hook(name, "stop", env)
        got = subs.collect()
        subs.close_all()
        rc.close()
        # receipt matrix: subscriber x owed event (first receipt; NaN = never)
        idx = {k: i for i, k in enumerate(owed)}
        col = np.array([idx.get(k, -1) for k in got["keys"]] or [-1])[got["key"]] if len(got["key"]) else np.array([], int)
        keep = col >= 0
        R = np.full((n, len(owed)), np.nan)
        R[got["conn"][keep], col[keep]] = got["t"][keep]
        missing = int(np.isnan(R).sum())
        c = np.array(commit)
        late = np.isnan(R) | (R - c > CATCHUP_S)
        last_late = np.where(late, np.nan_to_num(R, nan=np.inf), -np.inf).max(axis=1) if len(owed) else np.zeros(n)
        reconnect = np.array([min((t for t in got["connects"].get(i, []) if t > t_kill), default=np.inf)
                              for i in range(n)])
        caught = np.maximum(last_late, reconnect)
        after = [k for k, t in zip(owed, c) if t > t_kill]
        res = {
            "subscribers": n, "rate": rate, "pre_s": pre, "post_s": post,
            "server_down_s": t_listen - t_kill, "healthz_s": t_up - t_kill,
            "reconnected_all_s": float(reconnect.max() - t_kill), "reconnected_p50_s": float(np.median(reconnect) - t_kill),
            "never_reconnected": int(np.isinf(reconnect).sum()),
            "caught_up_all_s": float(caught.max() - t_kill), "caught_up_p50_s": float(np.median(caught) - t_kill),
            "owed_events": len(owed), "owed_after_kill": len(after), "pairs": n * len(owed), "missing": missing,
            "missing_reconnected": int(np.isnan(R[np.isfinite(reconnect)]).sum()),
            "drained": done["complete"], "dups": got["dups"], "messages": got["messages"],
            "requests_ok": len(produced.out), "request_errors": produced.errors,
            "losses": sum(len(v) for v in got["losses"].values()), "why": got.get("why", {}),
            "restarted_seen": int(np.isfinite(R[:, [i for i, k in enumerate(owed) if k[0] == 4]]).all(axis=1).sum())
            if any(k[0] == 4 for k in owed) else 0,
            "server_5xx": env.server_errors(), "drain_s": drain, "span_s": span,
            "server_cpu": server_cpu / span, "sub_cpu": sum(c_done[k] - c_kill[k] for k in sub_pids) / span,
            "server_replays": _count_lines(env.server.log, b'"event":"replayed"'),
        }
        print(f"  recovery x{n} at {rate:.0f}/s: server down {res['server_down_s']:.2f} s (healthz {res['healthz_s']:.2f} s), all reconnected "
              f"{res['reconnected_all_s']:.2f} s, all caught up {res['caught_up_all_s']:.2f} s after the kill; "
              f"{res['owed_events']} events owed to each, missing {missing} of {res['pairs']:,}, "
              f"{res['dups']:,} duplicates", flush=True)
        return res
    finally:
        env.stop()


def _count_lines(path: Any, needle: bytes) -> int:
    n = 0
    if path and path.exists():
        with open(path, "rb") as f:
            for line in f:
                if needle in line:
                    n += 1
    return n


def _print(r: dict[str, Any]) -> None:
    extra = "" if r["drained"] else f" NOT DRAINED ({r['missing']:,} missing)"
    cpu = f"server cpu {r['server_cpu']:.2f}, subscribers {r['sub_cpu']:.2f}"
    if r["side"] == "aiw":
        cpu += f", redis {r['redis_cpu']:.2f}"
    print(f"  {r['side']:<7} x{r['subscribers']:<5} {r['rate']:.0f} ev/s  lag p50 {r['p50_ms']:.1f} ms  "
          f"p99 {r['p99_ms']:.1f} ms  max {r['max_ms']:.1f} ms  ({r['received']:,}/{r['pairs']:,} pairs; {cpu}){extra}",
          flush=True)


RECOVERIES = ((20.0, 25.0, 15.0, 60.0), (RATE, 10.0, 10.0, 40.0))  # (changes/s, before, after the kill, drain)


def run(pool: Pool, *, counts: tuple[int, ...] = (1, 100, 1000), rate: float = RATE, seconds: float = 8.0,
        warmup: float = 2.0, drain: float = 30.0, recovery_n: int = 1000,
        recoveries: tuple[tuple[float, float, float, float], ...] = RECOVERIES, processes: int = 4,
        profile_hook: Any = None) -> dict[str, Any]:
    import shutil
    import tempfile
    from pathlib import Path

    raise_nofile()  # the servers we start inherit it
    subs = SubPool(processes)
    log_dir = Path(tempfile.mkdtemp(prefix="aiw-bench-bcast-"))
    b = Broadcaster(log_dir)
    rows = []
    recs = []
    try:
        for n in counts:
            aiw = aiw_lag(pool, subs, n, rate=rate, seconds=seconds, warmup=warmup, drain=drain,
                          profile_hook=profile_hook)
            ceil = ceiling_lag(subs, b, n, rate=rate, seconds=seconds, warmup=warmup, drain=drain)
            ratio = aiw["p99_ms"] / ceil["p99_ms"] if ceil["p99_ms"] > 0 else float("nan")
            rows.append({"subscribers": n, "aiw": aiw, "ceiling": ceil, "p99_ratio": ratio,
                         "pass": aiw["p99_ms"] < TARGET_P99_MS})
        for r_rate, pre, post, r_drain in recoveries:
            recs.append(recovery(pool, subs, recovery_n, rate=r_rate, pre=pre, post=post, drain=r_drain,
                                 profile_hook=profile_hook))
    finally:
        b.stop()
        subs.stop()
        shutil.rmtree(log_dir, ignore_errors=True)
    return {"rate": rate, "seconds": seconds, "warmup": warmup, "processes": processes,
            "producer_connections": PRODUCER_CONNECTIONS, "rows": rows, "recoveries": recs,
            "target_n": max(counts), "pass": rows[-1]["pass"], "catchup_s": CATCHUP_S}


def _ms(x: float) -> str:
    return "∞" if x == float("inf") else "—" if math.isnan(x) else f"{x:,.1f}"


def _s(x: float) -> str:
    return "never" if x == float("inf") else f"{x:.2f} s"


def markdown(res: dict[str, Any]) -> str:
    out = [f"{res['rate']:.0f} state changes/s (create + claim through the API: one UPS State Report each), "
           f"{res['seconds']:.0f} s measured after {res['warmup']:.0f} s warm-up per point; lag = receipt by the "
           f"subscriber − send time of the request that caused the event (aiw) or of the broadcast (ceiling); "
           f"every (event, subscriber) pair counts. Subscribers: {res['processes']} client processes.", "",
           "| subscribers | aiw p50 ms | aiw p99 ms | aiw max ms | ceiling p50 ms | ceiling p99 ms | p99 aiw / ceiling "
           "| aiw server CPU | ceiling CPU | subscriber CPU (aiw / ceiling) | pairs received (aiw) | target p99 < 50 ms |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        a, c = r["aiw"], r["ceiling"]
        target = ("PASS" if r["pass"] else "FAIL") if r["subscribers"] == res["target_n"] else ("(pass)" if r["pass"] else "(fail)")
        out.append(f"| {r['subscribers']:,} | {_ms(a['p50_ms'])} | {_ms(a['p99_ms'])} | {_ms(a['max_ms'])} | "
                   f"{_ms(c['p50_ms'])} | {_ms(c['p99_ms'])} | {r['p99_ratio']:.1f}× | {a['server_cpu']:.2f} | "
                   f"{c['server_cpu']:.2f} | {a['sub_cpu']:.2f} / {c['sub_cpu']:.2f} | "
                   f"{a['received']:,} / {a['pairs']:,} | {target} |")
    out += ["", "| subscribers | producer rate (aiw) | create p50 / p99 ms | claim p50 / p99 ms | redis CPU | "
                "fan-out spread p50 ms (aiw / ceiling) | all received after the window (aiw) |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        a, c = r["aiw"], r["ceiling"]
        h = a["http"]
        cr, cl = h.get("create", {}), h.get("claim", {})
        out.append(f"| {r['subscribers']:,} | {a['rate']:.0f}/s | {cr.get('p50_ms', float('nan')):.1f} / "
                   f"{cr.get('p99_ms', float('nan')):.1f} | {cl.get('p50_ms', float('nan')):.1f} / {cl.get('p99_ms', float('nan')):.1f} | "
                   f"{a['redis_cpu']:.2f} | {_ms(a['spread_p50_ms'])} / {_ms(c['spread_p50_ms'])} | "
                   f"{_s(a['drain_s']) if a['drained'] else 'not drained'} |")
    recs = res["recoveries"]
    if not recs:
        return "\n".join(out)
    n = recs[0]["subscribers"]
    head = "| recovery, " + f"{n:,} subscribers | " + " | ".join(f"{r['rate']:.0f} changes/s" for r in recs) + " |"
    out += ["", head, "|---|" + "---:|" * len(recs)]

    def row(label: str, f: Any) -> None:
        out.append(f"| {label} | " + " | ".join(f(r) for r in recs) + " |")

    row("state changes flowing before / after the kill", lambda r: f"{r['pre_s']:.0f} s / {r['post_s']:.0f} s")
    row("server down: kill → the new server accepts connections", lambda r: _s(r["server_down_s"]))
    row("kill → the new server answers /healthz", lambda r: _s(r["healthz_s"]))
    row(f"all {n:,} reconnected (median)", lambda r: f"{_s(r['reconnected_all_s'])} ({_s(r['reconnected_p50_s'])})"
        + (f"; {r['never_reconnected']} never" if r["never_reconnected"] else ""))
    row(f"all caught up (median): from then on no event later than {res['catchup_s']:.0f} s after its commit",
        lambda r: f"{_s(r['caught_up_all_s'])} ({_s(r['caught_up_p50_s'])})")
    row("events owed to each subscriber (stream entries after the phase began)", lambda r: f"{r['owed_events']:,}")
    row("**missing (subscriber, event) pairs at the end**", lambda r: f"**{r['missing']:,}** of {r['pairs']:,}"
        + ("" if r["drained"] else f" (after waiting {r['drain_s']:.0f} s)"))
    row("… of which on subscribers that had reconnected", lambda r: f"{r.get('missing_reconnected', 0):,}")
    row("duplicates received (at-least-once replay)", lambda r: f"{r['dups']:,}")
    row("replays the server ran (connections it replayed to)", lambda r: f"{r['server_replays']:,}")
    row("client connection attempts that failed: refused / handshake > 10 s",
        lambda r: f"{r['why'].get('ConnectionRefusedError', 0):,} / {r['why'].get('open timeout', 0):,}")
    row("subscribers that received the RESTARTED SCP Status Change", lambda r: f"{r['restarted_seen']:,}")
    row("CPU from the kill until all received (or the wait ended): new server / subscribers",
        lambda r: f"{r['server_cpu']:.2f} / {r['sub_cpu']:.2f} over {r['span_s']:.0f} s")
    return "\n".join(out)
