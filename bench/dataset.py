"""A realistic stored population, built through the real API (never behind the server's
back): every workitem is created with POST and taken to its state with the same requests
a performer or requester sends, so Redis holds exactly the production form (hash, indexes,
start-time and final-state sets, event stream).

Mix: 72% COMPLETED, 15% CANCELED by a cancellation request while SCHEDULED, 8% CANCELED by
the performer after a claim, 2% IN PROGRESS, 3% SCHEDULED; 10 workitem codes; 20,000
patients; start datetimes spread over 180 days (bench/workload.py).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from bench import Env
from bench.loadgen import Pool

MIX = (("C", 0.72), ("R", 0.15), ("X", 0.08), ("P", 0.02), ("S", 0.03))
W = "bench.workload"


def plan(start: int, end: int, seed: int = 42) -> list[tuple[str, int]]:
    rng = random.Random(seed * 1_000_003 + start)
    kinds, weights = zip(*MIX)
    return [(rng.choices(kinds, weights)[0], n) for n in range(start, end)]


def load(pool: Pool, env: Env, start: int, end: int, *, connections: int = 32, chunk: int = 25_000,
         uids: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Store workitems ``start``..``end`` through the API; returns counts, rates, and
    (in ``uids``) the UIDs by final state kind."""
    uids = uids if uids is not None else {}
    t0 = time.monotonic()
    requests = 0
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for a in range(start, end, chunk):
        b = min(end, a + chunk)
        r = pool.run(f"load {a}-{b}", "127.0.0.1", env.server.port, f"{W}:load", connections=connections,
                     duration=3600, warmup=0.0, lead=0.5, setup=f"{W}:body_pool", params={"bodies": 1},
                     work=plan(a, b), watch={"server": env.server.proc.pid})
        for kind, uid in r.out:
            uids.setdefault(kind, []).append(uid)
            counts[kind] += 1
        errors.update(r.errors)
        requests += r.count()
        el = time.monotonic() - t0
        print(f"  loaded {b:>7} workitems  {(b - start) / el:6.0f} workitems/s  {requests / el:6.0f} req/s  "
              f"cpu server {r.cpu['server']:.2f} client {r.cpu['client']:.2f}" + (f"  errors {dict(errors)}" if errors else ""), flush=True)
    el = time.monotonic() - t0
    return {"workitems": end - start, "seconds": el, "workitems_per_s": (end - start) / el,
            "requests": requests, "requests_per_s": requests / el, "by_state": dict(counts), "errors": dict(errors)}
