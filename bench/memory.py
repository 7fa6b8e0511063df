"""Benchmark 3: memory. Redis bytes per stored AI workitem (used_memory delta / count,
MEMORY USAGE of workitem hashes, the index and event-stream shares) and the server's RSS
after the same request mix at 1,000 and at 100,000 stored workitems (target: flat).

When ``search_measure`` is given, the search benchmark runs on the 100k population
between loading and the second mix, so one load serves both (``python -m bench``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import redis

from bench import Env, dataset, rss_kib, start_env
from bench.loadgen import Pool, percentile
from bench.search import queries

W = "bench.workload"
TARGET_RSS_RATIO = 1.25  # "flat": at most 25% more RSS at 100x the workitems


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def redis_stats(env: Env, uids: dict[str, list[str]] | None = None, sample: int = 200) -> dict[str, Any]:
    """used_memory, and MEMORY USAGE of: sample workitem hashes per state, every index
    key, the start-time/final sets and the event stream."""
    r = redis.Redis(port=env.redis.port)
    try:
        info = r.info("memory")
        p = env.prefix
        out: dict[str, Any] = {"used_memory": info["used_memory"], "used_memory_dataset": info.get("used_memory_dataset"),
                               "keys": r.dbsize(), "stored": r.zcard(f"{p}ix:all")}
        if uids is None:
            return out
        rng = random.Random(5)
        per_state = {}
        for kind, lst in uids.items():
            pick = rng.sample(lst, min(sample, len(lst)))
            pipe = r.pipeline(transaction=False)
            for u in pick:
                pipe.memory_usage(f"{p}wi:{u}", samples=0)
                pipe.hstrlen(f"{p}wi:{u}", "doc")
            res = pipe.execute()
            mem = [x for x in res[0::2] if x]
            doc = [x for x in res[1::2] if x]
            per_state[kind] = {"n": len(lst), "hash_bytes": sum(mem) / len(mem) if mem else 0,
                               "doc_bytes": sum(doc) / len(doc) if doc else 0}
        out["per_state"] = per_state
        total = sum(v["n"] for v in per_state.values())
        out["hash_bytes_weighted"] = sum(v["n"] * v["hash_bytes"] for v in per_state.values()) / total
        out["doc_bytes_weighted"] = sum(v["n"] * v["doc_bytes"] for v in per_state.values()) / total
        # every key under the prefix, by kind (exact, no sampling)
        by_kind: dict[str, list[int]] = {}
        batch: list[bytes] = []

        def flush() -> None:
            pipe = r.pipeline(transaction=False)
            for k in batch:
                pipe.memory_usage(k, samples=0)
            for k, m in zip(batch, pipe.execute()):
                name = k.decode()[len(p):]
                kind = ("workitem hashes" if name.startswith("wi:") else "index sorted sets" if name.startswith("ix:")
                        else name)
                acc = by_kind.setdefault(kind, [0, 0])
                acc[0] += 1
                acc[1] += m or 0
            batch.clear()

        for k in r.scan_iter(match=f"{p}*", count=2000):
            batch.append(k)
            if len(batch) >= 2000:
                flush()
        if batch:
            flush()
        out["by_kind"] = {k: {"keys": v[0], "bytes": v[1]} for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][1])}
        out["events"] = r.xlen(f"{p}events")
        return out
    finally:
        r.close()


MIXES = {"paged": ("a", "b50", "c"), "unbounded": ("a", "b", "c")}


def mix(pool: Pool, env: Env, uids: list[str], requests: int, connections: int, variant: str) -> dict[str, Any]:
    """``requests`` operations: per 40, one whole lifecycle (5 requests), 19 searches
    (the search benchmark's kinds in turn: "paged" = (a), (b) with limit=50, (c);
    "unbounded" = (a), (b) without limit, (c)) and 20 retrieves of stored workitems."""
    kinds = MIXES[variant]
    qs = [path for kind in kinds for _, path in queries(kind, 40, seed=11)]
    random.Random(1).shuffle(qs)
    rng = random.Random(2)
    ops: list[tuple] = []
    for i in range(requests):
        if i % 40 == 0:
            ops.append(("L",))
        elif i % 2:
            ops.append(("S", qs[i % len(qs)]))
        else:
            ops.append(("R", uids[rng.randrange(len(uids))]))
    r = pool.run(f"mix {variant}", "127.0.0.1", env.server.port, f"{W}:mix", connections=connections, duration=600,
                 warmup=0.0, setup=f"{W}:body_pool", params={"bodies": 50}, work=ops, watch={"server": env.server.proc.pid})
    time.sleep(0.5)
    rss, hwm = rss_kib(env.server.proc.pid), vm_hwm_kib(env.server.proc.pid)
    print(f"  mix {variant:<9} {r.seconds:5.1f}s: " + ", ".join(f"{k} {len(v)} (p50 {percentile(v, 50) * 1000:.1f} ms)"
                                                             for k, v in sorted(r.latencies.items()))
          + f"  server RSS {rss / 1024:.1f} MiB" + (f" errors={r.errors}" if r.errors else ""), flush=True)
    return {"operations": len(ops), "requests": r.count(), "seconds": r.seconds, "errors": r.errors,
            "rss_kib": rss, "hwm_kib": hwm, "server_cpu": r.cpu["server"]}


def run(pool: Pool, *, small: int = 1000, large: int = 100_000, mix_requests: int = 3000, connections: int = 32,
        search_measure: Callable[[Env], dict[str, Any]] | None = None) -> dict[str, Any]:
    env = start_env(with_bare=search_measure is not None)  # the bare app: search throughput's ceiling
    pid = env.server.proc.pid
    uids: dict[str, list[str]] = {}
    try:
        empty = redis_stats(env)
        rss_start = rss_kib(pid)
        load_small = dataset.load(pool, env, 0, small, connections=connections, uids=uids)
        rss_small_loaded = rss_kib(pid)
        all_uids = [u for lst in uids.values() for u in lst]
        mixes_small = {v: mix(pool, env, all_uids, mix_requests, connections, v) for v in MIXES}
        stats_small = redis_stats(env)
        load_large = dataset.load(pool, env, small, large, connections=connections, uids=uids)
        stats_large = redis_stats(env, uids)
        rss_large_loaded = rss_kib(pid)
        all_uids = [u for lst in uids.values() for u in lst]
        mixes_large = {v: mix(pool, env, all_uids, mix_requests, connections, v) for v in MIXES}
        stats_after = redis_stats(env)
        search_res = search_measure(env) if search_measure else None
        n = stats_large["stored"]
        ratios = {v: mixes_large[v]["rss_kib"] / mixes_small[v]["rss_kib"] for v in MIXES}
        res = {
            "small": small, "large": large, "stored_small": stats_small["stored"], "stored_large": n,
            "stored_after": stats_after["stored"], "rss_start_kib": rss_start,
            "rss_small_loaded_kib": rss_small_loaded, "rss_large_loaded_kib": rss_large_loaded,
            "mixes_small": mixes_small, "mixes_large": mixes_large,
            "rss_ratio": ratios, "rss_pass": {v: x <= TARGET_RSS_RATIO for v, x in ratios.items()},
            "redis_empty": empty, "redis_small": stats_small, "redis_large": stats_large, "redis_after": stats_after,
            "bytes_per_workitem": (stats_large["used_memory"] - empty["used_memory"]) / n,
            "by_kind_per_workitem": {k: v["bytes"] / n for k, v in stats_large["by_kind"].items()},
            "load_small": load_small, "load_large": load_large,
            "server_log_bytes": env.server_log_bytes(), "server_5xx": env.server_errors(),
        }
        if search_res is not None:
            search_res["stored"] = stats_after["stored"]
            search_res["load"] = load_large
            res["search"] = search_res
        return res
    finally:
        env.stop()


def markdown(res: dict[str, Any]) -> str:
    s = res["redis_large"]
    kib = 1024
    names = {"C": "COMPLETED", "R": "CANCELED (request while SCHEDULED)", "X": "CANCELED (by performer)",
             "P": "IN PROGRESS", "S": "SCHEDULED"}
    out = [f"Redis after {res['stored_large']:,} stored workitems (all through the API): used_memory "
           f"{s['used_memory'] / kib / kib:.1f} MiB ({res['redis_empty']['used_memory'] / kib / kib:.1f} MiB empty), "
           f"{s['keys']:,} keys, {s['events']:,} events in the stream.", "",
           "| Redis bytes per stored workitem | bytes |", "|---|---:|",
           f"| **used_memory delta / count (everything)** | **{res['bytes_per_workitem']:,.0f}** |"]
    for kind, v in s["by_kind"].items():
        out.append(f"| … MEMORY USAGE of {kind} ({v['keys']:,} keys) / count | {v['bytes'] / res['stored_large']:,.0f} |")
    out += [f"| MEMORY USAGE of one workitem hash (mean of samples, weighted by state) | {s['hash_bytes_weighted']:,.0f} |",
            f"| … of which its DICOM JSON `doc` field | {s['doc_bytes_weighted']:,.0f} |", "",
            "| state | stored | MEMORY USAGE hash | doc bytes |", "|---|---:|---:|---:|"]
    for k, v in s["per_state"].items():
        out.append(f"| {names.get(k, k)} | {v['n']:,} | {v['hash_bytes']:,.0f} | {v['doc_bytes']:,.0f} |")
    ms, ml = res["mixes_small"], res["mixes_large"]
    out += ["", "| server (aiw, one uvicorn worker) | stored | RSS MiB | peak (VmHWM) MiB |", "|---|---:|---:|---:|",
            f"| at start, empty store | 0 | {res['rss_start_kib'] / kib:.1f} | |",
            f"| after loading | {res['small']:,} | {res['rss_small_loaded_kib'] / kib:.1f} | |"]
    for v in MIXES:
        out.append(f"| after the {v} mix ({ms[v]['operations']:,} operations) | ≈{res['stored_small']:,} | "
                   f"{ms[v]['rss_kib'] / kib:.1f} | {ms[v]['hwm_kib'] / kib:.1f} |")
    out.append(f"| after loading | {res['stored_large']:,} | {res['rss_large_loaded_kib'] / kib:.1f} | |")
    for v in MIXES:
        out.append(f"| after the {v} mix ({ml[v]['operations']:,} operations) | ≈{res['stored_after']:,} | "
                   f"{ml[v]['rss_kib'] / kib:.1f} | {ml[v]['hwm_kib'] / kib:.1f} |")
    out += ["", "| RSS after the same mix, large / small store | ratio | target flat (≤ "
            f"{TARGET_RSS_RATIO}) |", "|---|---:|---|"]
    for v in MIXES:
        out.append(f"| {v} mix: searches {', '.join(MIXES[v])} | {res['rss_ratio'][v]:.2f} | "
                   f"{'PASS' if res['rss_pass'][v] else 'FAIL'} |")
    return "\n".join(out)
