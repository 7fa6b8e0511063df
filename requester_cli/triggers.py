"""What both PACS triggers share: a persisted cursor file and "make the workitems of
this study" for every procedure whose input rules it satisfies.

A trigger may see a study twice (a restart between the Create and the cursor write, a
study that changes again); the deterministic workitem UID makes the second Create a 409
that counts as "exists", so the cursor only has to avoid *missing* studies.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import httpx

from requester_cli import request as rq
from requester_cli.qido import PacsError, Qido
from requester_cli.select import NoMatchingSeries
from requester_cli.templates import ProcedureTemplate
from upsrs.client import UpsClient, UpsError

Report = Callable[[str], None]


def load_state(path: Path, default: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return dict(default)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"state file {path} cannot be read ({exc}); fix or remove it") from None
    return {**default, **data} if isinstance(data, dict) else dict(default)


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write-then-rename: a crash leaves the old cursor or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Result:
    procedure: str
    action: str  # created | exists | readied | skipped
    uid: str | None = None
    detail: str = ""


async def make_workitems(qido: Qido, ups: UpsClient, templates: Sequence[ProcedureTemplate], study_uid: str, *,
                         readiness: str = "READY", report: Report = lambda s: None,
                         quiet_skip: bool = False) -> list[Result]:
    """One workitem per procedure the study fits (its series match the input rules). The
    study is read once; PACS or Task Manager errors propagate (the caller retries later).
    ``quiet_skip``: a procedure the study does not fit (yet) is not reported."""
    extra = sorted({r.attribute for t in templates for r in t.stat})
    study, instances = await rq.read_study(qido, study_uid, extra)
    results = []
    for template in templates:
        try:
            p = await rq.plan_from(qido, template, study, instances, readiness=readiness,
                                   with_prior=template.inputs.prior == "optional")
        except NoMatchingSeries as exc:
            if not quiet_skip:
                results.append(Result(template.name, "skipped", None, str(exc)))
            continue
        out = await (rq.ensure(ups, p) if readiness == "READY" else rq.create(ups, p))
        why = f" [{p.priority}: {p.stat}]" if p.stat else ""
        report(f"{out.action} {out.uid} study {study_uid} procedure {template.name} inputs {readiness}{why}")
        results.append(Result(template.name, out.action, out.uid, "; ".join(p.notes)))
    return results


async def poll_forever(poll_once: Callable[[], Awaitable[Any]], report: Callable[[str], None],
                       interval: float, stop: asyncio.Event | None = None) -> None:
    """Poll until ``stop``; an unreachable PACS or Task Manager is reported and retried at
    the next interval (the persisted cursor has not moved, so nothing is missed)."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await poll_once()
        except (PacsError, UpsError, httpx.HTTPError, OSError) as exc:
            report(f"will retry: {exc}")
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass
