"""Attention views: the few workitems a QA person must look at now.

* late: HIGH priority, not finished, older than its procedure's time budget;
* stuck: IN PROGRESS with no progress (and no state change) for ``stuck_minutes``;
* failed: CANCELED within ``failed_window_hours``, with the discontinuation reason.
One pass over the model: cheap enough to recompute every second with 10,000 rows.
"""

from __future__ import annotations

from typing import Any

from watcher.config import WatchSettings
from watcher.model import FINAL, Model, Row


def attention(model: Model, settings: WatchSettings, now: float, limit: int = 50) -> dict[str, Any]:
    late: list[tuple[float, Row, float]] = []
    stuck: list[tuple[float, Row]] = []
    failed: list[tuple[float, Row]] = []
    stuck_after = settings.stuck_minutes * 60
    failed_after = now - settings.failed_window_hours * 3600
    for r in model.rows.values():
        if r.state in FINAL:
            if r.state == "CANCELED":
                at = r.final_at or r.state_since
                if at >= failed_after:
                    failed.append((at, r))
            continue
        if r.info.get("priority") == "HIGH":
            budget = settings.budget(r.info.get("procedure", ""), r.info.get("procedure_code", ""))
            over = now - r.created - budget
            if over > 0:
                late.append((over, r, budget))
        if r.state == "IN PROGRESS" and now - r.last_activity >= stuck_after:
            stuck.append((now - r.last_activity, r))
    late.sort(key=lambda x: -x[0])
    stuck.sort(key=lambda x: -x[0])
    failed.sort(key=lambda x: -x[0])
    return {
        "late": [{**r.to_json(), "over": over, "budget": budget} for over, r, budget in late[:limit]],
        "stuck": [{**r.to_json(), "idle": idle} for idle, r in stuck[:limit]],
        "failed": [{**r.to_json(), "failed_at": at} for at, r in failed[:limit]],
        "counts": {"late": len(late), "stuck": len(stuck), "failed": len(failed)},
    }
