"""Benchmark 1: lifecycle throughput and each UPS transaction against the bare ceiling.

One run, side by side, same client processes and concurrency: the bare endpoint (one
Redis GET + SET) is measured several times interleaved with the UPS phases, and every
UPS rate is reported as a ratio of the mean bare rate. Target: each transaction >= 50%.
"""

from __future__ import annotations

import random
from statistics import mean, median
from typing import Any

from bench import Env, start_env
from bench.loadgen import PhaseResult, Pool, percentile
from bench.workload import CODES, q

TARGET_RATIO = 0.5
W = "bench.workload"


def _searches(phase: str) -> list[str]:
    """The queries of a search phase: "search", SCHEDULED workitems of each code, 10 a
    page; "search-50", of the first code, 50 a page (a performer's pull)."""
    if phase == "search":
        return [q(ProcedureStepState="SCHEDULED", **{"ScheduledWorkitemCodeSequence.CodeValue": c[0]}, limit="10")
                for c in CODES]
    return [q(ProcedureStepState="SCHEDULED", **{"ScheduledWorkitemCodeSequence.CodeValue": CODES[0][0]}, limit="50")]


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
        ups("search", "search", params={**base, "queries": _searches("search")})
        ups("search-50", "search", params={**base, "kind": "search", "queries": _searches("search-50")})
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


# ---------------------------------------------------------------- rounds (--rounds N)
ROUND_PHASES = (("create", "create (RAD-80)"), ("retrieve", "retrieve (RAD-83)"),
                ("search", "search SCHEDULED+code, limit=10 (RAD-81)"),
                ("search-50", "search SCHEDULED+code, limit=50 (RAD-81)"),
                ("change-state", "change state: claim (RAD-82)"), ("update", "update: progress (RAD-84)"),
                ("lifecycle", "whole lifecycle (requests/s)"))


def run_rounds(pool: Pool, *, rounds: int, duration: float = 3.0, connections: int = 32) -> dict[str, Any]:
    """Every transaction phase ``rounds`` times, each between two bare phases; its ratio in a
    round is its rate over the mean of those two bare rates (and per CPU: each rate over
    its server's CPU). On a shared machine one 5 s phase moves by ±10% against the next, as
    much as a change is worth: the median of many adjacent pairs is what resolves it."""
    env = start_env(with_bare=True)
    assert env.bare is not None
    host = "127.0.0.1"
    watch_srv = {"server": env.server.proc.pid, "redis": env.redis.proc.pid}
    watch_bare = {"server": env.bare.proc.pid, "redis": env.redis.proc.pid}
    base = {"host": host, "connections": connections, "bodies": 300}
    pairs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in ROUND_PHASES}
    lat: dict[str, list[float]] = {name: [] for name, _ in ROUND_PHASES}
    bare_rates: list[float] = []
    try:
        pool.run("warm-bare", host, env.bare.port, f"{W}:bare", connections=connections, duration=1.0, params=base)
        pool.run("warm-create", host, env.server.port, f"{W}:create", connections=connections, duration=1.0,
                 setup=f"{W}:body_pool", params={**base, "keep_uids": False})

        def bare() -> PhaseResult:
            r = pool.run("bare", host, env.bare.port, f"{W}:bare", connections=connections, duration=duration,
                         params=base, watch=watch_bare)
            bare_rates.append(r.rate("bare"))
            return r

        def ups(name: str, scenario: str, **kw: Any) -> PhaseResult:
            r = pool.run(name, host, env.server.port, f"{W}:{scenario}", connections=connections, duration=duration,
                         setup=f"{W}:body_pool", watch=watch_srv, **{"params": base, **kw})
            _print(r)
            return r

        for n in range(rounds):
            print(f"  round {n + 1} of {rounds}", flush=True)
            before = bare()
            for name, _ in ROUND_PHASES:
                if name == "create":
                    r = ups(name, "create", params={**base, "keep_uids": True})
                    uids = list(r.out)
                    need = int(r.rate("create") * 2.5 * duration) - len(uids)  # claims outrun creates
                    if need > 0:
                        uids += pool.run("fill", host, env.server.port, f"{W}:create", connections=connections,
                                         warmup=0.0, duration=need / max(r.rate("create"), 1.0),
                                         setup=f"{W}:body_pool", params={**base, "keep_uids": True}).out
                    random.Random(n).shuffle(uids)
                    kind = "create"
                elif name == "retrieve":
                    r, kind = ups(name, "retrieve", params={**base, "uids": uids[:5000]}), "retrieve"
                elif name in ("search", "search-50"):
                    r, kind = ups(name, "search", params={**base, "queries": _searches(name)}), "search"
                elif name == "change-state":
                    r, kind = ups(name, "claim", work=uids), "change-state"
                    claimed = list(r.out)
                elif name == "update":
                    r, kind = ups(name, "update", params={**base, "claimed": claimed}), "update"
                else:
                    r, kind = ups(name, "lifecycle"), ""
                after = bare()
                bare_rate = (before.rate("bare") + after.rate("bare")) / 2
                bare_per_cpu = (before.rate("bare") / before.cpu["server"] + after.rate("bare") / after.cpu["server"]) / 2
                rate = r.rate(kind) if kind else r.rate()
                pairs[name].append({"ratio": rate / bare_rate, "per_cpu": rate / r.cpu["server"] / bare_per_cpu,
                                    "rate": rate, "bare": bare_rate, "exhausted": bool(r.exhausted),
                                    "errors": r.errors})
                lat[name] += [x for k, v in r.latencies.items() if k == kind or not kind for x in v]
                before = after
        errors_5xx = env.server_errors()
    finally:
        env.stop()
    rows = []
    for name, label in ROUND_PHASES:
        got = pairs[name]
        ratios = sorted(p["ratio"] for p in got)
        per_cpu = sorted(p["per_cpu"] for p in got)
        rows.append({"transaction": label, "rounds": len(got), "ratio": median(ratios), "ratio_range": (ratios[0], ratios[-1]),
                     "per_cpu": median(per_cpu), "per_cpu_range": (per_cpu[0], per_cpu[-1]),
                     "rate": median(p["rate"] for p in got), "p50_ms": percentile(lat[name], 50) * 1000,
                     "p99_ms": percentile(lat[name], 99) * 1000, "pass": median(ratios) >= TARGET_RATIO,
                     "exhausted": any(p["exhausted"] for p in got), "pairs": got})
    return {"rounds": rounds, "duration_s": duration, "connections": connections, "client_processes": len(pool.pids),
            "bare_rates": bare_rates, "rows": rows, "server_5xx": errors_5xx}


def markdown_rounds(res: dict[str, Any]) -> str:
    out = [f"{res['rounds']} rounds; in each, every transaction phase ({res['duration_s']:.0f} s, "
           f"{res['connections']} keep-alive connections from {res['client_processes']} client processes) runs between "
           f"two bare phases, and its ratio is its rate over their mean. Bare: "
           f"{min(res['bare_rates']):.0f}–{max(res['bare_rates']):.0f} req/s over {len(res['bare_rates'])} phases.",
           "",
           "| transaction | median vs bare | range | median per CPU | range | req/s (median) | p50 ms | p99 ms | target ≥ 50% |",
           "|---|---:|---|---:|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        lo, hi = r["ratio_range"]
        plo, phi = r["per_cpu_range"]
        out.append(f"| {r['transaction']} | {r['ratio'] * 100:.0f}% | {lo * 100:.0f}–{hi * 100:.0f}% | "
                   f"{r['per_cpu'] * 100:.0f}% | {plo * 100:.0f}–{phi * 100:.0f}% | {r['rate']:.0f} | {r['p50_ms']:.1f} | "
                   f"{r['p99_ms']:.1f} | {'PASS' if r['pass'] else 'FAIL'}{' (ran dry)' if r['exhausted'] else ''} |")
    out += ["", f"Server answers with a 5xx: {res['server_5xx']}."]
    return "\n".join(out)
