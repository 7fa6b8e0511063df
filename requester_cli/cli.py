"""``aiw request``: the Task Requester's commands.

Every failure a user can cause or meet (unknown study, PACS unreachable, no matching
series, invalid template, Task Manager refusing) ends in ONE line on stderr naming the
cause and exit code 1; nothing is created unless everything before the Create worked.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, List, Optional, TypeVar

import httpx
import typer
from rich.console import Console

from requester_cli import render
from requester_cli import request as rq
from requester_cli import templates as tpl
from requester_cli.qido import PacsError, Qido
from requester_cli.select import NoMatchingSeries
from upsrs.client import UpsClient, UpsError

app = typer.Typer(help="Task Requester: turn studies into AIW-I workitems and work with them",
                  no_args_is_help=True)
T = TypeVar("T")

SERVER = typer.Option("http://127.0.0.1:8080", "--server", envvar="AIW_SERVER",
                      help="UPS-RS service root of the Task Manager")
TEMPLATES = typer.Option(None, "--templates", envvar="AIW_REQUEST_TEMPLATES",
                         help="procedure template file (TOML); default: the sample shipped with aiw")
JSON = typer.Option(False, "--json", help="machine-readable output")


def _console(min_width: int = 120) -> Console:
    """Wide enough for UIDs (64 characters) even when stdout is not a terminal."""
    return Console(width=max(min_width, Console().width), soft_wrap=False)


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def run(work: Callable[[], Awaitable[T]], server: str | None = None) -> T:
    """Run ``work``; known failures become one line and exit code 1."""
    try:
        return asyncio.run(work())
    except (tpl.TemplateError, NoMatchingSeries, PacsError) as exc:
        fail(str(exc))
    except UpsError as exc:
        what = exc.warning or exc.body.strip()[:200] or "no reason given"
        fail(f"Task Manager {server} refused the {exc.transaction}: HTTP {exc.status}: {what}")
    except httpx.HTTPError as exc:
        fail(f"Task Manager {server} is unreachable: {exc.__class__.__name__}: {exc}".rstrip(": "))
    raise AssertionError("unreachable")


def _templates(path: Optional[Path]) -> list[tpl.ProcedureTemplate]:
    try:
        return tpl.load(path or tpl.SAMPLE)
    except tpl.TemplateError as exc:
        fail(str(exc))
        raise


def _params(values: List[str]) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, value = v.partition("=")
        if not sep or not name:
            fail(f"--param {v!r}: write name=value")
        out[name.strip()] = value.strip()
    return out


@app.command("templates")
def templates_cmd(templates: Optional[Path] = TEMPLATES, as_json: bool = JSON) -> None:
    """List the procedures of the template file."""
    from rich.table import Table

    found = _templates(templates)
    if as_json:
        typer.echo(json.dumps([t.model_dump(mode="json") for t in found], indent=1))
        return
    t = Table(title=str(templates or tpl.SAMPLE), header_style="bold")
    for col in ("Procedure", "Workitem code", "Station / worklist", "Priority", "Inputs", "Parameters", "STAT when"):
        t.add_column(col, overflow="fold")
    for p in found:
        r = p.inputs
        inputs = [f"{r.modality}", f"≥{r.min_instances} instances", f"≤{r.max_series} series"]
        if r.series_description:
            inputs.insert(1, f"description /{r.series_description}/")
        if r.sop_classes:
            inputs.append(f"{len(r.sop_classes)} SOP classes")
        if r.prior != "none":
            inputs.append(f"prior {r.prior}")
        params = [f"{x.code.value} = {x.value if not isinstance(x.value, tpl.Code) else x.value.value}"
                  + (f" {x.unit.value}" if x.unit and x.unit.value != "1" else "") for x in p.parameters]
        t.add_row(f"{p.name}\n{p.label}", f"{p.code.value} ({p.code.scheme})\n{p.code.meaning}",
                  f"{p.station.value if p.station else '-'}\n{p.worklist_label or '-'}", p.priority,
                  "\n".join(inputs), "\n".join(params) or "-",
                  "\n".join(f"{s.attribute} ~ /{s.pattern}/" for s in p.stat) or "-")
    _console(170).print(t)


@app.command()
def create(
    study_uid: str = typer.Argument(..., help="Study Instance UID"),
    pacs: str = typer.Option(..., "--pacs", envvar="AIW_PACS", help="DICOMweb service root of the study's origin"),
    server: str = SERVER,
    procedure: Optional[str] = typer.Option(None, "--procedure", "-p", help="procedure name (or workitem code)"),
    with_prior: bool = typer.Option(False, "--with-prior", help="also the most recent earlier study of the same "
                                    "patient (Patient ID + Issuer) with the same modality: one QIDO-RS query "
                                    "restricted to that patient"),
    priority: Optional[str] = typer.Option(None, "--priority", help="HIGH, MEDIUM or LOW (default: the "
                                           "template's, HIGH when a STAT rule holds)"),
    param: List[str] = typer.Option([], "--param", help="name=value: override a parameter (checked)"),
    stow_url: Optional[str] = typer.Option(None, "--stow-url", help="STOW-RS URL where results should go"),
    templates: Optional[Path] = TEMPLATES,
    as_json: bool = JSON,
) -> None:
    """Create the workitem of one study (RAD-80); prints its UID."""
    if priority is not None and priority.upper() not in tpl.PRIORITIES:
        fail(f"--priority {priority!r}: use HIGH, MEDIUM or LOW")
    template = None
    found = _templates(templates)
    try:
        template = tpl.find(found, procedure)
    except tpl.TemplateError as exc:
        fail(str(exc))
    assert template is not None
    overrides = _params(param)

    async def work() -> tuple[rq.Plan, rq.Outcome]:
        async with Qido(pacs) as qido, UpsClient(server) as ups:
            plan = await rq.plan(qido, template, study_uid, with_prior=with_prior,
                                 priority=priority.upper() if priority else None, parameters=overrides,
                                 stow_url=stow_url)
            return plan, await rq.create(ups, plan)

    plan, out = run(work, server)
    if as_json:
        typer.echo(json.dumps({
            "uid": out.uid, "action": out.action, "study": plan.study.study_uid, "procedure": template.name,
            "priority": plan.priority, "stat": plan.stat, "inputs": [s.series_uid for s in plan.inputs],
            "prior": plan.prior.study_uid if plan.prior else None, "notes": plan.notes, "warnings": out.warnings}))
        return
    for note in plan.notes:
        typer.echo(note, err=True)
    if out.action == "exists":
        typer.echo(f"workitem of study {study_uid} for {template.name} already exists", err=True)
    typer.echo(out.uid)


@app.command("watch-orthanc")
def watch_orthanc(
    orthanc: str = typer.Option(..., "--orthanc", envvar="AIW_ORTHANC", help="Orthanc REST root, e.g. http://pacs:8042"),
    pacs: Optional[str] = typer.Option(None, "--pacs", help="its DICOMweb root (default: <orthanc>/dicom-web)"),
    server: str = SERVER,
    state: Path = typer.Option(Path("aiw-watch-orthanc.json"), "--state", help="cursor file (position in /changes)"),
    interval: float = typer.Option(1.0, "--interval", help="seconds between polls of /changes"),
    from_start: bool = typer.Option(False, "--from-start", help="first run: handle Orthanc's whole change "
                                    "history (default: start at the present)"),
    once: bool = typer.Option(False, "--once", help="handle what is new, then exit"),
    early: bool = typer.Option(True, "--early/--no-early", help="create INCOMPLETE workitems when a series "
                               "starts arriving (READY once the study is stable)"),
    templates: Optional[Path] = TEMPLATES,
) -> None:
    """Follow Orthanc's change feed: each StableStudy → the workitems its procedures call for
    (and, with --early, INCOMPLETE ones as soon as its series arrive)."""
    from requester_cli.watch_orthanc import OrthancWatcher

    found = _templates(templates)

    async def work() -> None:
        async with Qido(pacs or orthanc.rstrip("/") + "/dicom-web") as qido, UpsClient(server) as ups:
            w = OrthancWatcher(orthanc, qido, ups, found, state, from_start=from_start, report=_say, early=early)
            if once:
                await w.poll_once()
            else:
                await w.run(interval)

    run(work, server)


@app.command("watch-dicomweb")
def watch_dicomweb(
    pacs: str = typer.Option(..., "--pacs", envvar="AIW_PACS", help="DICOMweb service root to poll"),
    server: str = SERVER,
    state: Path = typer.Option(Path("aiw-watch-dicomweb.json"), "--state", help="cursor file"),
    interval: float = typer.Option(10.0, "--interval", help="seconds between polls"),
    stable_age: float = typer.Option(60.0, "--stable-age", help="seconds without new instances before a study "
                                     "is complete (READY); younger studies get INCOMPLETE workitems"),
    lookback_days: int = typer.Option(1, "--lookback-days", help="Study Date window: today minus this"),
    once: bool = typer.Option(False, "--once", help="poll once, then exit"),
    templates: Optional[Path] = TEMPLATES,
) -> None:
    """Poll a DICOMweb origin (QIDO-RS) for new or grown studies and make their workitems."""
    from requester_cli.watch_dicomweb import DicomwebWatcher

    found = _templates(templates)

    async def work() -> None:
        async with Qido(pacs) as qido, UpsClient(server) as ups:
            w = DicomwebWatcher(qido, ups, found, state, stable_age=stable_age, lookback_days=lookback_days,
                                report=_say)
            if once:
                await w.poll_once()
            else:
                await w.run(interval)

    run(work, server)


def _say(line: str) -> None:
    typer.echo(line)
    sys.stdout.flush()


def _dt_range(date_from: Optional[str], date_to: Optional[str]) -> str | None:
    if not date_from and not date_to:
        return None
    for name, v in (("--from", date_from), ("--to", date_to)):
        if v and not (len(v.replace("-", "")) == 8 and v.replace("-", "").isdigit()):
            fail(f"{name} {v!r}: write a date as YYYY-MM-DD")
    lo = f"{date_from.replace('-', '')}000000" if date_from else ""
    hi = f"{date_to.replace('-', '')}235959" if date_to else ""
    return f"{lo}-{hi}"


@app.command("list")
def list_cmd(
    server: str = SERVER,
    state: Optional[str] = typer.Option(None, "--state", help="SCHEDULED, IN PROGRESS, COMPLETED or CANCELED"),
    procedure: Optional[str] = typer.Option(None, "--procedure", "-p", help="procedure name or workitem code"),
    patient: Optional[str] = typer.Option(None, "--patient", help="Patient ID"),
    study: Optional[str] = typer.Option(None, "--study", help="Study Instance UID"),
    accession: Optional[str] = typer.Option(None, "--accession", help="Accession Number"),
    date_from: Optional[str] = typer.Option(None, "--from", help="scheduled on or after (YYYY-MM-DD)"),
    date_to: Optional[str] = typer.Option(None, "--to", help="scheduled on or before (YYYY-MM-DD)"),
    limit: int = typer.Option(100, "--limit", help="at most this many"),
    templates: Optional[Path] = TEMPLATES,
    as_json: bool = JSON,
) -> None:
    """Search workitems (RAD-81) with readable filters."""
    match: list[tuple[str, str]] = []
    if state:
        if state.upper() not in ("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"):
            fail(f"--state {state!r}: use SCHEDULED, 'IN PROGRESS', COMPLETED or CANCELED")
        match.append(("ProcedureStepState", state.upper()))
    if procedure:
        code = procedure
        try:
            code = tpl.find(tpl.load(templates or tpl.SAMPLE), procedure).code.value
        except tpl.TemplateError:
            pass  # not a template name: take it as the workitem code itself
        match.append(("ScheduledWorkitemCodeSequence.CodeValue", code))
    for key, value in (("PatientID", patient), ("StudyInstanceUID", study),
                       ("ReferencedRequestSequence.AccessionNumber", accession)):
        if value:
            match.append((key, value))
    window = _dt_range(date_from, date_to)
    if window:
        match.append(("ScheduledProcedureStepStartDateTime", window))

    async def work() -> list[dict[str, Any]]:
        rows = []
        async with UpsClient(server) as ups:
            async for ds in ups.search_all(match, includefield=render.SUMMARY_FIELDS):
                rows.append(render.summary(ds))
                if len(rows) >= limit:
                    break
        return rows

    rows = run(work, server)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
    elif not rows:
        typer.echo("no workitems match", err=True)
    else:
        _console(200).print(render.table(rows))


@app.command()
def show(uid: str = typer.Argument(..., help="workitem UID"), server: str = SERVER, as_json: bool = JSON) -> None:
    """One workitem for a person: names, not tags; inputs and outputs as links."""
    async def work() -> dict[str, Any]:
        async with UpsClient(server) as ups:
            return await ups.retrieve(uid)

    ds = run(work, server)
    if as_json:
        typer.echo(json.dumps(ds, indent=1))
    else:
        _console().print(render.detail(ds), crop=False)


@app.command()
def cancel(
    uid: str = typer.Argument(..., help="workitem UID"),
    reason: str = typer.Option(..., "--reason", help="why (Reason For Cancellation)"),
    server: str = SERVER,
    contact: Optional[str] = typer.Option(None, "--contact", help="who to call about it (Contact Display Name)"),
    requester: str = typer.Option("AIWREQUESTER", "--aet", help="requesting AE title"),
) -> None:
    """Request cancellation (RAD-88). A SCHEDULED workitem is canceled at once; an IN
    PROGRESS one is asked to stop (its performer decides)."""
    async def work() -> None:
        async with UpsClient(server) as ups:
            await ups.request_cancellation(uid, reason=reason, contact_name=contact, requester=requester)

    run(work, server)
    typer.echo(f"cancellation requested for {uid}: {reason}")


@app.command()
def follow(
    uid: str = typer.Argument(..., help="workitem UID"),
    server: str = SERVER,
    aet: Optional[str] = typer.Option(None, "--aet", help="AE title to subscribe as (default: one of its own)"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="give up after this many seconds"),
) -> None:
    """Print a workitem's events (RAD-87) until it is COMPLETED or CANCELED, then its results."""
    from requester_cli.follow import follow as follow_events

    ae = aet or f"AIWF{os.getpid() % 10**8:08d}"

    async def work() -> tuple[str, dict[str, Any]]:
        async with UpsClient(server) as ups:
            coro = follow_events(ups, uid, ae, _say)
            return await (asyncio.wait_for(coro, timeout) if timeout else coro)

    try:
        final, ds = run(work, server)
    except asyncio.TimeoutError:
        fail(f"workitem {uid} did not finish within {timeout:g} s")
        raise
    typer.echo(f"final state: {final}")
    for line in render.outputs(ds):
        typer.echo(f"output {line}")
    for p in ds.get("00741216", {}).get("Value", [])[:1]:
        for line in render.parameters(p, 0x00741212):
            typer.echo(f"performed with {line}")
    progress = (ds.get("00741002", {}).get("Value") or [{}])[0]
    reason = render.text(progress, 0x00741238)
    if final == "CANCELED" and reason:
        typer.echo(f"reason: {reason}")
    raise typer.Exit(0 if final == "COMPLETED" else 3)
