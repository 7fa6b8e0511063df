"""``python -m bench``: every benchmark in one run (about 8 minutes on 2 cores).

    python -m bench                        # lifecycle, search + memory on one 100k load, events
    python -m bench --only lifecycle       # one benchmark (repeatable: --only search --only memory)
    python -m bench --only lifecycle --rounds 5   # each transaction between two bare phases, 5 times: medians
    python -m bench --only events          # event lag (1/100/1,000 subscribers) and recovery
    python -m bench --quick                # smoke run with small sizes (~2½ minutes)
    python -m bench --only performer       # performer end to end with Orthanc (~10 min; not in the default run)
    python -m bench --json out.json --markdown out.md
    python -m bench --only lifecycle --profile /tmp/prof   # py-spy the server per phase (pip install py-spy)

Results go to stdout as Markdown tables (docs/benchmarks.md holds a full run's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import machine
from bench.loadgen import Pool


def _profile_hook(out_dir: Path):  # type: ignore[no-untyped-def]
    """py-spy record of the server process for each UPS phase (``--profile``)."""
    exe = shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, subprocess.Popen] = {}

    def hook(name: str, what: str, env: Any) -> None:
        if what == "start":
            running[name] = subprocess.Popen(
                [exe, "record", "--pid", str(env.server.proc.pid), "--rate", "250", "--format", "raw",
                 "--output", str(out_dir / f"{name}.txt"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            p = running.pop(name)
            p.send_signal(2)  # SIGINT: py-spy writes its output and exits
            p.wait(30)

    return hook


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=["lifecycle", "search", "memory", "events", "performer"],
                    help="run only this benchmark (repeatable); default: all but performer")
    ap.add_argument("--quick", action="store_true", help="small sizes and short phases: a smoke run")
    ap.add_argument("--duration", type=float, help="seconds per throughput phase (default 5, quick 1.5)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    ap.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    ap.add_argument("--size", type=int, help="stored workitems for search/memory (default 100000, quick 3000)")
    ap.add_argument("--small", type=int, help="stored workitems of the first memory point (default 1000, quick 300)")
    ap.add_argument("--queries", type=int, help="queries per search kind (default 200, quick 30)")
    ap.add_argument("--subscribers", type=int, action="append",
                    help="subscriber counts of the event lag benchmark (repeatable; default 1, 100, 1000; quick 1, 10, 100); "
                         "recovery runs with the largest")
    ap.add_argument("--rounds", type=int, help="lifecycle: each transaction phase this many times, each between two "
                                                "bare phases; medians of the pairs (3 s phases unless --duration)")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--markdown", type=Path, help="write the result tables here")
    ap.add_argument("--profile", type=Path, help="py-spy the server during each throughput phase, search kind, "
                                                 "event lag phase and recovery into this folder (collapsed stacks)")
    a = ap.parse_args(argv)
    which = set(a.only or ["lifecycle", "search", "memory", "events"])
    duration = a.duration or (1.5 if a.quick else 5.0)
    size = a.size or (3000 if a.quick else 100_000)
    small = a.small or (300 if a.quick else 1000)
    per_kind = a.queries or (30 if a.quick else 200)
    mix_requests = 600 if a.quick else 3000

    from bench import events, lifecycle, memory, search

    info = machine()
    print(f"# aiw benchmarks {info['date']}: {info['nproc']} × {info['cpu']}, {info['mem']}, load {info['loadavg_at_start']}",
          flush=True)
    results: dict[str, Any] = {"machine": info, "argv": sys.argv[1:], "quick": a.quick}
    md: list[str] = []
    pool = Pool(a.clients)
    try:
        hook = _profile_hook(a.profile) if a.profile else None
        if "lifecycle" in which:
            print("## 1. lifecycle and transaction throughput", flush=True)
            if a.rounds:
                res = lifecycle.run_rounds(pool, rounds=a.rounds, duration=a.duration or 3.0, connections=a.connections)
                results["lifecycle_rounds"] = res
                md += ["## Throughput, in rounds", "", lifecycle.markdown_rounds(res), ""]
            else:
                res = lifecycle.run(pool, duration=duration, connections=a.connections, profile_hook=hook)
                results["lifecycle"] = res
                md += ["## Throughput", "", lifecycle.markdown(res), ""]
        if "memory" in which:
            print("## 2+3. memory" + (" and search" if "search" in which else ""), flush=True)
            measure = (lambda env: search.measure(pool, env, per_kind, profile_hook=hook,
                                                     throughput_seconds=duration, connections=a.connections)) if "search" in which else None
            res = memory.run(pool, small=small, large=size, mix_requests=mix_requests, connections=a.connections,
                             search_measure=measure)
            if "search" in res:
                results["search"] = res.pop("search")
                md += ["## Search", "", search.markdown(results["search"]), ""]
            results["memory"] = res
            md += ["## Memory", "", memory.markdown(res), ""]
        elif "search" in which:
            print("## 2. search", flush=True)
            results["search"] = search.run(pool, size=size, per_kind=per_kind, connections=a.connections,
                                           profile_hook=hook, throughput_seconds=duration)
            md += ["## Search", "", search.markdown(results["search"]), ""]
        if "events" in which:
            print("## 4. events", flush=True)
            counts = tuple(sorted(a.subscribers or ([1, 10, 100] if a.quick else [1, 100, 1000])))
            kw = dict(seconds=3.0, warmup=1.0, drain=15.0,
                      recoveries=((20.0, 4.0, 6.0, 15.0), (100.0, 4.0, 6.0, 15.0))) if a.quick else {}
            res = events.run(pool, counts=counts, recovery_n=counts[-1], profile_hook=hook, **kw)
            results["events"] = res
            md += ["## Events", "", events.markdown(res), ""]
        if "performer" in which:
            from bench import performer

            print("## 5. performer end to end", flush=True)
            res = performer.run(quick=a.quick)
            results["performer"] = res
            md += ["## Performer end to end", "", performer.markdown(res), ""]
    finally:
        pool.close()
    text = "\n".join(md)
    print()
    print(text)
    if a.markdown:
        a.markdown.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
