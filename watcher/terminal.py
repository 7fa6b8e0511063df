"""The terminal console: the same live model as a rich table, for people on a shell.

Redrawn a few times a second from the model (never from events directly), so it shows
exactly what the web console shows, including the connection state while reconnecting.
"""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from watcher.attention import attention
from watcher.config import WatchSettings
from watcher.model import Model, fmt_pct
from watcher.sync import Status

STATE_STYLE = {"SCHEDULED": "blue", "IN PROGRESS": "yellow", "COMPLETED": "green", "CANCELED": "red"}
CONN_STYLE = {"connected": "bold green", "connecting": "yellow", "reconnecting": "bold yellow", "unreachable": "bold red"}


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def render(model: Model, status: Status, settings: WatchSettings, now: float | None = None, limit: int = 25) -> Group:
    now = now if now is not None else time.time()
    counts = model.counts()
    head = Text()
    head.append(f"aiw watch — {status.state}", style=CONN_STYLE.get(status.state, ""))
    head.append(f": {status.message}\n")
    head.append("  ".join(f"{s} {n}" for s, n in counts.items()) + f"   ({len(model.rows)} workitems")
    head.append(f", {model.skipped} malformed skipped)" if model.skipped else ")")
    att = attention(model, settings, now, limit=3)
    c = att["counts"]
    if any(c.values()):
        head.append(f"\nattention: {c['late']} HIGH past budget, {c['stuck']} stuck, {c['failed']} recently failed",
                    style="bold red")
        for r in att["failed"]:
            head.append(f"\n  failed: {r['procedure']} {r['accession']} — {r['reason'] or 'no reason given'}", style="red")
    table = Table(expand=True, show_lines=False)
    for name in ("State", "Priority", "Procedure", "Patient", "Accession", "Performer", "Progress", "Age", "In state"):
        table.add_column(name, no_wrap=name in ("State", "Age", "In state"))
    for r in model.newest_first()[:limit]:
        i = r.info
        prog = fmt_pct(r.progress) if r.progress is not None else ""
        if r.progress_text:
            prog = f"{prog} {r.progress_text}".strip()
        if r.state == "CANCELED" and r.reason:
            prog = r.reason
        table.add_row(Text(r.state, style=STATE_STYLE.get(r.state, "")), i.get("priority", ""), i.get("procedure", ""),
                      i.get("patient", ""), i.get("accession", ""), i.get("performer", ""), prog,
                      duration(now - r.created), duration(now - r.state_since))
    return Group(head, table)
