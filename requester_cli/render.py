"""Workitems for people: names instead of tags, inputs and outputs as links.

Pure functions from a DICOM JSON workitem to text/rich renderables, so the CLI stays
thin and the tests can read what a user reads.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from upsrs import dicomjson as dj

Dataset = dict[str, Any]
SUMMARY_FIELDS = ("00080018", "00741000", "00404041", "00741200", "00741204", "00404018", "00100010", "00100020",
                  "00100021", "0020000D", "0040A370", "00404005", "00741202", "00404025")
FINAL = ("COMPLETED", "CANCELED")


def text(ds: Dataset, tag: int) -> str:
    v = dj.first(ds, tag)
    if isinstance(v, dict):
        return str(v.get("Alphabetic", ""))
    return "" if v is None else str(v)


def code(ds: Dataset, seq: int) -> str:
    items = dj.items(ds, seq)
    if not items:
        return ""
    i = items[0]
    value = text(i, 0x00080100) or text(i, 0x00080119) or text(i, 0x00080120)
    return f"{text(i, 0x00080104)} ({value}, {text(i, 0x00080102)})"


def when(dt: str) -> str:
    """DICOM DT '20261122101500+0100' as '2026-11-22 10:15:00 +0100'."""
    if len(dt) < 8:
        return dt
    out = f"{dt[:4]}-{dt[4:6]}-{dt[6:8]}"
    if len(dt) >= 14:
        out += f" {dt[8:10]}:{dt[10:12]}:{dt[12:14]}"
    tz = next((dt[i:] for i in range(8, len(dt)) if dt[i] in "+-"), "")
    return f"{out} {tz}".strip()


def summary(ds: Dataset) -> dict[str, str]:
    """The row of ``aiw request list`` (and its --json)."""
    req = (dj.items(ds, 0x0040A370) or [{}])[0]
    return {
        "uid": text(ds, 0x00080018),
        "state": text(ds, 0x00741000),
        "readiness": text(ds, 0x00404041),
        "priority": text(ds, 0x00741200),
        "procedure": text(ds, 0x00741204),
        "code": text((dj.items(ds, 0x00404018) or [{}])[0], 0x00080100),
        "patient": text(ds, 0x00100010),
        "patient_id": text(ds, 0x00100020),
        "patient_id_issuer": text(ds, 0x00100021),
        "accession": text(req, 0x00080050),
        "study": text(ds, 0x0020000D),
        "scheduled": when(text(ds, 0x00404005)),
    }


def table(rows: list[dict[str, str]]) -> Table:
    t = Table(show_lines=False, header_style="bold")
    t.add_column("Workitem", no_wrap=True)  # a UID cut in two cannot be copied
    for name in ("State", "Inputs", "Priority", "Procedure", "Patient", "Accession", "Scheduled"):
        t.add_column(name, overflow="fold")
    for r in rows:
        style = {"COMPLETED": "green", "CANCELED": "red", "IN PROGRESS": "yellow"}.get(r["state"], "")
        patient = f"{r['patient']} ({r['patient_id']}/{r['patient_id_issuer']})" if r["patient_id_issuer"] \
            else f"{r['patient']} ({r['patient_id']})"
        t.add_row(r["uid"], Text(r["state"], style=style), r["readiness"], r["priority"], r["procedure"], patient,
                  r["accession"], r["scheduled"])
    return t


def _issuer(item: Dataset) -> str:
    parts = [text(item, 0x00400031), text(item, 0x00400032)]
    kind = text(item, 0x00400033)
    return " / ".join(p for p in parts if p) + (f" ({kind})" if kind else "")


def parameters(ds: Dataset, seq: int = 0x00741210) -> list[str]:
    out = []
    for item in dj.items(ds, seq):
        name = (dj.items(item, 0x0040A043) or [{}])[0]
        kind = text(item, 0x0040A040)
        if kind == "NUMERIC":
            unit = (dj.items(item, 0x004008EA) or [{}])[0]
            u = text(unit, 0x00080100)
            raw = text(item, 0x0040A30A)
            try:
                raw = f"{float(raw):g}"
            except ValueError:
                pass
            value = raw + ("" if u in ("", "1") else f" {u}")
        elif kind == "CODE":
            value = code(item, 0x0040A168)
        else:
            value = text(item, 0x0040A160) or text(item, 0x0040A120)
        out.append(f"{text(name, 0x00080104) or text(name, 0x00080100)} = {value}")
    return out


def references(items: list[Dataset]) -> list[str]:
    """'series <uid> (<n> instances): <retrieve URL>' for Input/Output Information items."""
    out = []
    for item in items:
        n = len(dj.items(item, 0x00081199))
        urls = [text(w, 0x00081190) for w in dj.items(item, 0x0040E025)]
        link = urls[0] if urls else f"study {text(item, 0x0020000D)}"
        out.append(f"series {text(item, 0x0020000E)} ({n} instance{'s' if n != 1 else ''}): {link}")
    return out


def outputs(ds: Dataset) -> list[str]:
    items = [o for p in dj.items(ds, 0x00741216) for o in dj.items(p, 0x00404033)]
    return references(items)


def detail(ds: Dataset) -> Group:
    """``aiw request show``: the workitem for a person."""
    req = (dj.items(ds, 0x0040A370) or [{}])[0]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")

    def row(name: str, value: str) -> None:
        if value:
            grid.add_row(name, value)

    row("Workitem", text(ds, 0x00080018))
    row("State", f"{text(ds, 0x00741000)}  (inputs {text(ds, 0x00404041)})")
    row("Priority", text(ds, 0x00741200))
    row("Procedure", text(ds, 0x00741204))
    row("Workitem code", code(ds, 0x00404018))
    row("Station", code(ds, 0x00404025))
    row("Worklist label", text(ds, 0x00741202))
    issuer = text(ds, 0x00100021)
    row("Patient", f"{text(ds, 0x00100010)}, ID {text(ds, 0x00100020)}" + (f" (issuer {issuer})" if issuer else ""))
    row("Birth date / sex", " / ".join(x for x in (text(ds, 0x00100030), text(ds, 0x00100040)) if x))
    row("Study", text(ds, 0x0020000D))
    acc_issuer = _issuer((dj.items(req, 0x00080051) or [{}])[0])
    row("Accession", text(req, 0x00080050) + (f" (issuer {acc_issuer})" if acc_issuer else ""))
    row("Requested procedure", " ".join(x for x in (text(req, 0x00401001), text(req, 0x00321060)) if x))
    row("Scheduled start", when(text(ds, 0x00404005)))
    row("Expected completion", when(text(ds, 0x00404011)))
    for i, p in enumerate(parameters(ds)):
        row("Parameters" if i == 0 else "", p)
    progress = (dj.items(ds, 0x00741002) or [{}])[0]
    if progress:
        row("Progress", f"{text(progress, 0x00741004)}% {text(progress, 0x00741006)}".strip())
        row("Cancellation", text(progress, 0x00741238) or "")
    parts: list[Any] = [grid]
    for title, refs in (("Inputs", references(dj.items(ds, 0x00404021))), ("Outputs", outputs(ds))):
        if refs:  # links on lines of their own: a URL folded by a table cannot be clicked or copied
            parts.append(Text(title, style="bold"))
            parts += [_link(ref) for ref in refs]
    return Group(*parts)


def _link(ref: str) -> Text:
    url = ref.rsplit(": ", 1)[-1]
    line = Text("  " + ref, no_wrap=True, overflow="ignore")
    if url.startswith("http"):
        line.stylize(f"link {url}", len(line) - len(url))
    return line
