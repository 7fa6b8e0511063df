"""Statistics over the model: turnaround, throughput, failures, event lag.

Turnaround is scheduling to final state, per procedure, for workitems whose scheduling the
watcher saw (a workitem first seen already running has no known start and is left out
rather than guessed). Event lag is, for each final State Report that arrived live, its
arrival time minus the server's Modification DateTime of the final workitem: how late the
watcher (and so the people looking at it) learn that work is done.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from watcher.model import Model


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def statistics(model: Model, now: float, bins: int = 60) -> dict[str, Any]:
    hour, day = now - 3600, now - 86400
    turnaround: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"hour": [], "day": []})
    completed_per_min = [0] * bins
    failed_per_min = [0] * bins
    reasons: Counter[str] = Counter()
    finals_day = 0
    lags: list[float] = []
    for r in model.rows.values():
        at = r.final_at
        if at is None:
            continue
        if at >= day:
            finals_day += 1
            if r.state == "CANCELED":
                reasons[r.reason or "no reason given"] += 1
            scheduled = r.entered("SCHEDULED")
            if scheduled is not None and r.history[0].source in ("event", "search") and r.history[0].state == "SCHEDULED":
                t = at - scheduled
                if t >= 0:
                    proc = r.info.get("procedure") or "(unknown)"
                    turnaround[proc]["day"].append(t)
                    if at >= hour:
                        turnaround[proc]["hour"].append(t)
            if r.event_lag is not None and at >= hour:
                lags.append(r.event_lag)
        if at >= hour:
            b = min(bins - 1, int((at - hour) / (3600 / bins)))
            (completed_per_min if r.state == "COMPLETED" else failed_per_min)[b] += 1
    procs = []
    for proc, w in sorted(turnaround.items()):
        procs.append({"procedure": proc, "n_hour": len(w["hour"]), "n_day": len(w["day"]),
                      "p50_hour": percentile(w["hour"], 50), "p95_hour": percentile(w["hour"], 95),
                      "p50_day": percentile(w["day"], 50), "p95_day": percentile(w["day"], 95)})
    return {
        "now": now,
        "turnaround": procs,
        "throughput": {"completed_per_min": completed_per_min, "failed_per_min": failed_per_min,
                       "completed_hour": sum(completed_per_min), "failed_hour": sum(failed_per_min)},
        "failures": {"finals_day": finals_day, "failed_day": sum(reasons.values()),
                     "rate_day": (sum(reasons.values()) / finals_day) if finals_day else 0.0,
                     "by_reason": [{"reason": k, "count": v, "rate": v / finals_day} for k, v in reasons.most_common()]},
        "event_lag": {"n": len(lags), "p50": percentile(lags, 50), "p95": percentile(lags, 95),
                      "max": max(lags) if lags else None},
        "events": {"received": model.events, "duplicates": model.duplicates, "skipped": model.skipped},
    }
