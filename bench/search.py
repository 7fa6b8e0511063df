"""Benchmark 2: search latency over 100,000 stored workitems (target p95 < 20 ms).

Queries, one client connection, one at a time (latency, not throughput), each kind with
varied values so no response is the same twice:
  (a) ProcedureStepState=SCHEDULED & ScheduledWorkitemCodeSequence.CodeValue=X & limit=50
  (b) ScheduledProcedureStepStartDateTime=<one day> (no limit: the server's cap applies)
  (b50) the same with limit=50 (what a paging client asks for)
  (c) PatientID=<one patient>
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import orjson

from bench import Env, dataset, start_env
from bench.loadgen import Ctx, Pool, percentile
from bench.workload import CODES, EPOCH, PATIENTS, SPREAD_DAYS, q

TARGET_P95_MS = 20.0
KINDS = {
    "a": "(a) SCHEDULED & WorkitemCode & limit=50",
    "b": "(b) StartDateTime one-day range (no limit)",
    "b50": "(b) StartDateTime one-day range & limit=50",
    "c": "(c) PatientID",
}


def queries(kind: str, n: int, seed: int = 3) -> list[tuple[str, str]]:
    rng = random.Random(f"{seed}:{kind}")
    out = []
    for i in range(n):
        if kind == "a":
            path = q(ProcedureStepState="SCHEDULED", **{"ScheduledWorkitemCodeSequence.CodeValue": CODES[i % len(CODES)][0]},
                     limit="50")
        elif kind in ("b", "b50"):
            day = (EPOCH + timedelta(days=rng.randrange(SPREAD_DAYS))).strftime("%Y%m%d")
            extra = {"limit": "50"} if kind == "b50" else {}
            path = q(ScheduledProcedureStepStartDateTime=f"{day}000000-{day}235959", **extra)
        else:
            path = q(PatientID=f"PAT-{rng.randrange(PATIENTS):06d}")
        out.append((kind, path))
    return out


async def search_once(ctx: Ctx) -> None:
    kind, path = ctx.take()
    _, _, body = await ctx.call(kind, ctx.conn.build("GET", path), (200, 204))
    ctx.out.append((kind, len(orjson.loads(body)) if body else 0, len(body)))


def measure(pool: Pool, env: Env, per_kind: int = 200, warm: int = 20, profile_hook: Any = None,
            throughput_seconds: float = 0.0, connections: int = 32) -> dict[str, Any]:
    rows = []
    for kind, label in KINDS.items():
        pool.run(f"warm {kind}", "127.0.0.1", env.server.port, "bench.search:search_once", connections=1,
                 duration=600, warmup=0.0, lead=0.3, work=queries(kind, warm, seed=99))
        if profile_hook:
            profile_hook(f"search-{kind}", "start", env)
        r = pool.run(f"search {kind}", "127.0.0.1", env.server.port, "bench.search:search_once", connections=1,
                     duration=600, warmup=0.0, lead=0.3, work=queries(kind, per_kind),
                     watch={"server": env.server.proc.pid, "redis": env.redis.proc.pid})
        if profile_hook:
            profile_hook(f"search-{kind}", "stop", env)
        lat = r.latencies.get(kind, [])
        results = [o[1] for o in r.out]
        sizes = [o[2] for o in r.out]
        row = {"kind": kind, "query": label, "n": len(lat), "p50_ms": percentile(lat, 50) * 1000,
               "p95_ms": percentile(lat, 95) * 1000, "p99_ms": percentile(lat, 99) * 1000,
               "max_ms": max(lat) * 1000 if lat else float("nan"),
               "results_mean": sum(results) / len(results) if results else 0, "bytes_mean": sum(sizes) / len(sizes) if sizes else 0,
               "server_cpu": r.cpu["server"], "redis_cpu": r.cpu["redis"], "errors": r.errors}
        row["pass"] = row["p95_ms"] < TARGET_P95_MS
        rows.append(row)
        print(f"  search {label:<45} n={row['n']} p50 {row['p50_ms']:.1f} ms  p95 {row['p95_ms']:.1f} ms  "
              f"{row['results_mean']:.0f} results, {row['bytes_mean'] / 1024:.0f} KiB", flush=True)
    res: dict[str, Any] = {"rows": rows, "connections": connections}
    if env.bare is not None and throughput_seconds > 0:
        res["throughput"] = throughput(pool, env, throughput_seconds, connections)
    return res


def throughput(pool: Pool, env: Env, seconds: float, connections: int) -> list[dict[str, Any]]:
    """Search requests/s on the large store at the lifecycle benchmark's concurrency, side
    by side with the bare endpoint (measured before and after)."""
    from bench.lifecycle import TARGET_RATIO

    assert env.bare is not None
    host = "127.0.0.1"
    watch = {"server": env.server.proc.pid, "redis": env.redis.proc.pid}
    bares = []

    def bare() -> None:
        r = pool.run("bare", host, env.bare.port, "bench.workload:bare", connections=connections, duration=seconds,
                     params={}, watch={"server": env.bare.proc.pid, "redis": env.redis.proc.pid})
        bares.append(r.rate("bare"))
        print(f"  bare {r.rate('bare'):.0f} req/s (server cpu {r.cpu['server']:.2f})", flush=True)

    rows = []
    bare()
    for kind in ("a", "b50", "c"):
        qs = [path for _, path in queries(kind, 200, seed=21)]
        r = pool.run(f"search {kind}", host, env.server.port, "bench.workload:search", connections=connections,
                     duration=seconds, params={"queries": qs, "kind": "search"}, watch=watch)
        lat = r.latencies.get("search", [])
        rows.append({"kind": kind, "query": KINDS[kind], "rate": r.rate("search"), "p50_ms": percentile(lat, 50) * 1000,
                     "p99_ms": percentile(lat, 99) * 1000, "server_cpu": r.cpu["server"], "redis_cpu": r.cpu["redis"],
                     "errors": r.errors})
        print(f"  search {kind} x{connections}: {r.rate('search'):.0f} req/s  server cpu {r.cpu['server']:.2f} "
              f"redis cpu {r.cpu['redis']:.2f}", flush=True)
    bare()
    bare_rate = sum(bares) / len(bares)
    for row in rows:
        row["bare_rate"] = bare_rate
        row["ratio"] = row["rate"] / bare_rate
        row["pass"] = row["ratio"] >= TARGET_RATIO
    return rows


def run(pool: Pool, size: int = 100_000, per_kind: int = 200, connections: int = 32,
        profile_hook: Any = None, throughput_seconds: float = 0.0) -> dict[str, Any]:
    env = start_env(with_bare=throughput_seconds > 0)
    try:
        loaded = dataset.load(pool, env, 0, size, connections=connections)
        res = measure(pool, env, per_kind, profile_hook=profile_hook, throughput_seconds=throughput_seconds,
                      connections=connections)
        res["stored"] = size
        res["load"] = loaded
        return res
    finally:
        env.stop()


def markdown(res: dict[str, Any]) -> str:
    out = [f"{res['stored']:,} stored workitems; one connection, one query at a time, {res['rows'][0]['n']} "
           f"queries per kind with varied values (after 20 warm-up queries).", "",
           "| query | p50 ms | p95 ms | p99 ms | results/query | KiB/response | target p95 < 20 ms |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        out.append(f"| {r['query']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                   f"{r['results_mean']:.0f} | {r['bytes_mean'] / 1024:.0f} | {'PASS' if r['pass'] else 'FAIL'} |")
    if res.get("throughput"):
        t = res["throughput"]
        out += ["", f"Search throughput on the same store, {res.get('connections', 32)} connections, side by side with "
                    f"the bare endpoint ({t[0]['bare_rate']:.0f} req/s, mean of before and after):", "",
                "| query | req/s | vs bare | p50 ms | p99 ms | server CPU | redis CPU | target ≥ 50% |",
                "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in t:
            out.append(f"| {r['query']} | {r['rate']:.0f} | {r['ratio'] * 100:.0f}% | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                       f"{r['server_cpu']:.2f} | {r['redis_cpu']:.2f} | {'PASS' if r['pass'] else 'FAIL'} |")
    return "\n".join(out)
