"""Charts as inline SVG, drawn on the server.

No build step, no CDN, no JavaScript chart library: the watcher runs on hospital networks
that may reach nothing but the Task Manager, and an SVG string renders in any browser and
can be asserted on in a test like any other text.
"""

from __future__ import annotations

from html import escape
from typing import Any


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def bars(series: list[tuple[str, list[int], str]], *, width: int = 600, height: int = 140, title: str,
         x_label: str) -> str:
    """Stacked bars, one per bin (e.g. per minute), one colour per series."""
    n = max((len(v) for _, v, _ in series), default=0)
    totals = [sum(v[i] for _, v, _ in series if i < len(v)) for i in range(n)]
    top = max(totals + [1])
    pad_l, pad_b, pad_t = 34, 20, 18
    w = (width - pad_l - 4) / max(n, 1)
    h = height - pad_b - pad_t
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<title>{escape(title)}</title>',
           f'<text x="{pad_l}" y="12" font-size="11">{escape(title)} (max {top}/bin)</text>',
           f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{width - 4}" y2="{pad_t + h}" stroke="#999"/>',
           f'<text x="2" y="{pad_t + 8}" font-size="10">{top}</text>',
           f'<text x="2" y="{pad_t + h}" font-size="10">0</text>',
           f'<text x="{pad_l}" y="{height - 4}" font-size="10">{escape(x_label)}</text>']
    for i in range(n):
        y = pad_t + h
        for name, values, colour in series:
            v = values[i] if i < len(values) else 0
            if not v:
                continue
            bh = h * v / top
            y -= bh
            out.append(f'<rect x="{pad_l + i * w:.1f}" y="{y:.1f}" width="{max(w - 1, 1):.1f}" height="{bh:.1f}" '
                       f'fill="{colour}"><title>{escape(name)}: {v}</title></rect>')
    legend_x = width - 200
    for k, (name, _, colour) in enumerate(series):
        out.append(f'<rect x="{legend_x + k * 100}" y="4" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{legend_x + k * 100 + 14}" y="13" font-size="11">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbars(rows: list[tuple[str, float, str]], *, width: int = 600, title: str, unit: str = "") -> str:
    """Horizontal bars with labels: one row per category (turnaround, failure reasons)."""
    row_h, pad_t, label_w = 20, 20, 230
    height = pad_t + row_h * max(len(rows), 1) + 6
    top = max([v for _, v, _ in rows] + [1e-9])
    out = [f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
           f'<title>{escape(title)}</title><text x="0" y="12" font-size="11">{escape(title)}</text>']
    if not rows:
        out.append(f'<text x="0" y="{pad_t + 14}" font-size="11" fill="#666">no data yet</text>')
    for i, (label, value, shown) in enumerate(rows):
        y = pad_t + i * row_h
        bw = (width - label_w - 90) * value / top
        out.append(f'<text x="0" y="{y + 14}" font-size="11">{escape(label[:38])}</text>'
                   f'<rect x="{label_w}" y="{y + 3}" width="{max(bw, 1):.1f}" height="{row_h - 6}" fill="#4a7bd0">'
                   f'<title>{escape(label)}: {escape(shown)}</title></rect>'
                   f'<text x="{label_w + bw + 4:.1f}" y="{y + 14}" font-size="11">{escape(shown)}{escape(unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def stats_html(stats: dict[str, Any]) -> str:
    """The statistics panel: tables with the numbers and their charts."""
    parts = ['<section id="turnaround"><h2>Turnaround per procedure (scheduled → final)</h2>',
             '<table class="stats"><thead><tr><th>Procedure</th><th>n (1 h)</th><th>p50 (1 h)</th><th>p95 (1 h)</th>'
             '<th>n (24 h)</th><th>p50 (24 h)</th><th>p95 (24 h)</th></tr></thead><tbody>']
    for p in stats["turnaround"]:
        parts.append(f'<tr><td>{escape(p["procedure"])}</td><td>{p["n_hour"]}</td><td>{fmt_seconds(p["p50_hour"])}</td>'
                     f'<td>{fmt_seconds(p["p95_hour"])}</td><td>{p["n_day"]}</td><td>{fmt_seconds(p["p50_day"])}</td>'
                     f'<td>{fmt_seconds(p["p95_day"])}</td></tr>')
    if not stats["turnaround"]:
        parts.append('<tr><td colspan="7">no finished workitems with a known start yet</td></tr>')
    parts.append("</tbody></table>")
    parts.append(hbars([(f'{p["procedure"]} p95 (24 h)', p["p95_day"] or 0, fmt_seconds(p["p95_day"]))
                        for p in stats["turnaround"]], title="Turnaround p95 over the last day"))
    parts.append("</section>")
    tp = stats["throughput"]
    parts.append(f'<section id="throughput"><h2>Throughput (last hour)</h2><p>{tp["completed_hour"]} completed, '
                 f'{tp["failed_hour"]} failed in the last hour</p>')
    parts.append(bars([("completed", tp["completed_per_min"], "#3a9d5d"), ("failed", tp["failed_per_min"], "#c8423b")],
                      title="Finished per minute", x_label="60 minutes ago → now"))
    parts.append("</section>")
    fl = stats["failures"]
    parts.append(f'<section id="failures"><h2>Failures (last 24 h)</h2><p>{fl["failed_day"]} of {fl["finals_day"]} '
                 f'finished workitems failed ({fl["rate_day"] * 100:.1f}%)</p>')
    parts.append(hbars([(r["reason"], r["rate"] * 100, f'{r["count"]} ({r["rate"] * 100:.1f}%)') for r in fl["by_reason"]],
                       title="Failure rate by reason"))
    parts.append("</section>")
    lag = stats["event_lag"]
    parts.append(f'<section id="lag"><h2>Event lag (last hour)</h2><p>final State Reports: n={lag["n"]}, '
                 f'p50 {fmt_seconds(lag["p50"])}, p95 {fmt_seconds(lag["p95"])}, max {fmt_seconds(lag["max"])}</p>')
    parts.append(hbars([("p50", lag["p50"] or 0, fmt_seconds(lag["p50"])), ("p95", lag["p95"] or 0, fmt_seconds(lag["p95"])),
                        ("max", lag["max"] or 0, fmt_seconds(lag["max"]))] if lag["n"] else [],
                       title="Server change → watcher (arrival − Modification DateTime)"))
    ev = stats["events"]
    parts.append(f'<p class="muted">{ev["received"]} events received, {ev["duplicates"]} replayed duplicates dropped, '
                 f'{ev["skipped"]} malformed skipped</p></section>')
    return "".join(parts)
