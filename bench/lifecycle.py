"""Benchmark 1: lifecycle throughput and each UPS transaction against the bare ceiling.

One run, side by side, same client processes and concurrency: the bare endpoint (one
Redis GET + SET) is measured several times interleaved with the UPS phases, and every
UPS rate is reported as a ratio of the mean bare rate. Target: each transaction >= 50%.
"""

from __future__ import annotations

import random
from statistics import mean
from typing import Any

from bench import Env, start_env
from bench.loadgen import PhaseResult, Pool, percentile
from bench.workload import CODES, q

TARGET_RATIO = 0.5
W = "bench.workload"


def _lat(r: PhaseResult, kind: str) -> dict[str, float]:
    v = r.latencies.get(kind, [])
    return {"n": len(v), "rate": r.rate(kind), "p50_ms": percentile(v, 50) * 1000, "p99_ms": percentile(v, 99) * 1000}


def run(pool: Pool, *, duration: float = 5.0, connections: int = 32, env: Env | None = None,
        profile_hook: Any = None) -> dict[str, Any]:
    own = env is None
    env = env or start_env(with_bare=True)
    assert env.bare is not None
    host = "127.0.0.1"
    srv, bare_port = env.server.port, env.bare.port
    watch_srv = {"server": env.server.proc.pid, "redis": env.redis.proc.pid}
    watch_bare = {"server": env.bare.proc.pid, "redis": env.redis.proc.pid}
    base = {"host": host, "connections": connections, "bodies": 300}
    phases: dict[str, PhaseResult] = {}
    bares: list[PhaseResult] = []

    def ups(name: str, scenario: str, *, dur: float = duration, conns: int = connections, **kw: Any) -> PhaseResult:
        if profile_hook:
            profile_hook(name, "start", env)
        r = pool.run(name, host, srv, f"{W}:{scenario}", connections=conns, duration=dur,
                     setup=f"{W}:body_pool", watch=watch_srv, **{"params": base, **kw})
        if profile_hook:
            profile_hook(name, "stop", env)
        phases[name] = r
        _print(r)
        return r

    def bare() -> None:
        r = pool.run("bare", host, bare_port, f"{W}:bare", connections=connections, duration=duration,
                     params=base, watch=watch_bare)
        bares.append(r)
        _print(r)

    try:
        # warm-up: connections, caches, the Lua scripts loaded into Redis
        pool.run("warm-bare", host, bare_port, f"{W}:bare", connections=connections, duration=1.0, params=base)
        pool.run("warm-create", host, srv, f"{W}:create", connections=connections, duration=1.0,
                 setup=f"{W}:body_pool", params={**base, "keep_uids": False})
        bare()
        created = ups("create", "create", params={**base, "keep_uids": True})
        uids = list(created.out)
        # enough SCHEDULED workitems that the claim phase does not run dry (claims are faster)
        need = int(created.rate("create") * 3.5 * duration) - len(uids)
        if need > 0:
            fill = pool.run("fill", host, srv, f"{W}:create", connections=connections, warmup=0.0,
                            duration=need / max(created.rate("create"), 1.0), setup=f"{W}:body_pool",
                            params={**base, "keep_uids": True})
            uids += fill.out
        random.Random(7).shuffle(uids)
        ups("retrieve", "retrieve", params={**base, "uids": uids[:5000]})
        bare()
        code = CODES[0][0]
        ups("search", "search", params={**base, "queries": [
            q(ProcedureStepState="SCHEDULED", **{"ScheduledWorkitemCodeSequence.CodeValue": c[0]}, limit="10")
            for c in CODES]})
        ups("search-50", "search", params={**base, "kind": "search", "queries": [
            q(ProcedureStepState="SCHEDULED", **{"ScheduledWorkitemCodeSequence.CodeValue": code}, limit="50")]})
        claimed = ups("change-state", "claim", work=uids)
        ups("update", "update", params={**base, "claimed": list(claimed.out)})
        bare()
        ups("lifecycle", "lifecycle")
        bare()
        ups("lifecycle-1", "lifecycle", conns=1)  # unloaded latency: one client, no queueing
        log_bytes, errors_5xx = env.server_log_bytes(), env.server_errors()
    finally:
        if own:
            env.stop()

    bare_rates = [b.rate("bare") for b in bares]
    bare_rate = mean(bare_rates)
    bare_all = [x for b in bares for x in b.latencies.get("bare", [])]
    rows: list[dict[str, Any]] = [{
        "transaction": "bare GET+SET (ceiling)", "n": len(bare_all), "rate": bare_rate,
                                                    "p50_ms": percentile(bare_all, 50) * 1000,
                                                    "p99_ms": percentile(bare_all, 99) * 1000,
        "ratio": 1.0, "server_cpu": mean(b.cpu["server"] for b in bares), "redis_cpu": mean(b.cpu["redis"] for b in bares),
        "client_cpu": mean(b.cpu["client"] for b in bares), "pass": None,
    }]
    for name, kind, label in (("create", "create", "create (RAD-80)"), ("retrieve", "retrieve", "retrieve (RAD-83)"),
                              ("search", "search", "search SCHEDULED+code, limit=10 (RAD-81)"),
                              ("search-50", "search", "search SCHEDULED+code, limit=50 (RAD-81)"),
                              ("update", "update", "update: progress (RAD-84)"),
                              ("change-state", "change-state", "change state: claim (RAD-82)")):
        r = phases[name]
        lat = _lat(r, kind)
        ratio = lat["rate"] / bare_rate
        rows.append({"transaction": label, **lat, "ratio": ratio, "server_cpu": r.cpu["server"],
                     "redis_cpu": r.cpu["redis"], "client_cpu": r.cpu["client"], "pass": ratio >= TARGET_RATIO,
                     "exhausted": r.exhausted, "errors": r.errors})
    lc = phases["lifecycle"]
    steps = {k: _lat(lc, k) for k in ("create", "claim", "progress", "performed", "complete")}
    lc1 = phases["lifecycle-1"]
    steps1 = {k: _lat(lc1, k) for k in ("create", "claim", "progress", "performed", "complete")}
    lc_rate = lc.rate("complete")
    lc_req_rate = lc.rate()
    return {
        "connections": connections, "duration_s": duration, "scheduled_during_search": len(uids), "client_processes": len(pool.pids),
        "bare_rates": bare_rates, "bare_rate": bare_rate, "rows": rows,
        "lifecycle": {"workitems_per_s": lc_rate, "requests_per_s": lc_req_rate, "ratio": lc_req_rate / bare_rate,
                      "pass": lc_req_rate / bare_rate >= TARGET_RATIO, "steps": steps, "steps_1": steps1,
                      "workitems_per_s_1": lc1.rate("complete"),
                      "server_cpu": lc.cpu["server"], "redis_cpu": lc.cpu["redis"], "client_cpu": lc.cpu["client"],
                      "errors": lc.errors},
        "server_log_bytes": log_bytes, "server_5xx": errors_5xx,
    }


def _print(r: PhaseResult) -> None:
    kinds = ", ".join(f"{k} {len(v)} ({len(v) / r.seconds:.0f}/s, p50 {percentile(v, 50) * 1000:.1f} ms, "
                      f"p99 {percentile(v, 99) * 1000:.1f} ms)" for k, v in sorted(r.latencies.items()))
    cpu = " ".join(f"{k}={v:.2f}" for k, v in r.cpu.items())
    extra = " EXHAUSTED" if r.exhausted else ""
    errs = f" errors={r.errors}" if r.errors else ""
    print(f"  {r.name:<13} {r.seconds:4.1f}s  {kinds}  cpu[{cpu}]{extra}{errs}", flush=True)


def markdown(res: dict[str, Any]) -> str:
    out = [f"Concurrency: {res['connections']} keep-alive connections from {res['client_processes']} client "
           f"processes; {res['duration_s']:.0f} s per phase after 0.5 s warm-up. Bare endpoint measured "
           f"{len(res['bare_rates'])} times interleaved: " + ", ".join(f"{r:.0f}" for r in res["bare_rates"]) + " req/s.",
           "",
           "| transaction | req/s | vs bare | p50 ms | p99 ms | server CPU | redis CPU | client CPU | target ≥ 50% |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rows"]:
        verdict = "—" if r["pass"] is None else ("PASS" if r["pass"] else "FAIL")
        out.append(f"| {r['transaction']} | {r['rate']:.0f} | {r['ratio'] * 100:.0f}% | {r['p50_ms']:.1f} | "
                   f"{r['p99_ms']:.1f} | {r['server_cpu']:.2f} | {r['redis_cpu']:.2f} | {r['client_cpu']:.2f} | {verdict} |")
    out += ["", f"The throughput searches ran with {res['scheduled_during_search']:,} SCHEDULED workitems stored "
                f"(≈{res['scheduled_during_search'] // len(CODES):,} per workitem code: the backlog the create phase left); "
                "see Search for the same queries on a realistic 100k store."]
    lc = res["lifecycle"]
    out += ["", f"Lifecycle (create → claim → progress → final Update of the Performed Procedure Sequence → "
                f"complete, {res['connections']} connections each looping through whole lifecycles): "
                f"**{lc['workitems_per_s']:.0f} workitems/s** = {lc['requests_per_s']:.0f} UPS requests/s = "
                f"{lc['ratio'] * 100:.0f}% of the bare rate (server CPU {lc['server_cpu']:.2f}, "
                f"redis {lc['redis_cpu']:.2f}, client {lc['client_cpu']:.2f}).", "",
            f"| lifecycle step | req/s ({res['connections']} conns) | p50 ms | p99 ms | unloaded p50 ms (1 conn) | "
            "unloaded p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for k, s in lc["steps"].items():
        u = lc["steps_1"][k]
        out.append(f"| {k} | {s['rate']:.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {u['p50_ms']:.1f} | {u['p99_ms']:.1f} |")
    out += ["", f"One client alone runs {lc['workitems_per_s_1']:.0f} lifecycles/s (unloaded latencies above)."]
    return "\n".join(out)
