"""From a Study Instance UID to a created workitem (RAD-80), and nothing half-done.

Everything is read and checked before the one Create request: a study that cannot be
read, matches no series, or a template that is wrong never reaches the Task Manager, and
a refused Create leaves nothing behind (a workitem is one POST).

Idempotency per (study, procedure): the workitem UID is derived from the Study Instance
UID and the procedure's code, so a repeated trigger asks to create the same UID and the
Task Manager answers 409 — no duplicate, whatever the trigger's own bookkeeping lost.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from requester_cli import builder
from requester_cli.builder import SeriesRef, StudyRef
from requester_cli.qido import PacsError, Qido
from requester_cli.select import input_series, stat_reason
from requester_cli.templates import ProcedureTemplate
from upsrs import dicomjson as dj
from upsrs.client import Conflict, UpsClient, UpsError

Dataset = dict[str, Any]
INPUT_READINESS = 0x00404041
STATE = 0x00741000


def workitem_uid(study_uid: str, code: tuple[str, str, str]) -> str:
    """The one workitem UID of (study, procedure code): a name-based UUID (PS3.5 B.2)."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, f"aiw-request/{study_uid}/{code[1]}/{code[0]}").int)


@dataclass
class Plan:
    """A workitem ready to be created, and why it looks the way it does."""

    uid: str
    payload: Dataset
    study: StudyRef
    inputs: list[SeriesRef]
    prior: StudyRef | None
    priority: str
    stat: str | None
    readiness: str
    notes: list[str] = field(default_factory=list)


async def read_study(qido: Qido, study_uid: str, extra: Sequence[str] = ()) -> tuple[StudyRef, list[Dataset]]:
    """The study as the workitem needs it (see :mod:`requester_cli.qido` for the requests)."""
    instances = await qido.study_instances(study_uid, extra)
    first = instances[0]
    issuer = None
    if dj.first(first, 0x00080050) and not dj.items(first, 0x00080051):
        # QIDO returned no Issuer of Accession Number Sequence: read it from one instance
        meta = await qido.instance_metadata(study_uid, dj.first(first, 0x0020000E), dj.first(first, 0x00080018))
        issuer = builder.issuer_item(dj.items(meta, 0x00080051))
        if dj.first(first, 0x00100021) is None and dj.first(meta, 0x00100021):
            first["00100021"] = meta["00100021"]
    return builder.study_from_qido(instances, qido.base, accession_issuer=issuer), instances


def _when(ds: Dataset) -> str:
    return f"{dj.first(ds, 0x00080020) or ''}{dj.first(ds, 0x00080030) or ''}"


async def find_prior(qido: Qido, study: StudyRef, instances: Sequence[Dataset],
                     template: ProcedureTemplate) -> tuple[StudyRef | None, str]:
    """The most recent earlier study of the same patient (Patient ID + Issuer) with the
    procedure's modality, and a note saying what was found or why none."""
    if not study.patient_id or not study.patient_id_issuer:
        return None, ("no prior: the study has no Patient ID with an Issuer of Patient ID, and a prior "
                      "matched on Patient ID alone could be another patient's")
    current = max((_when(ds) for ds in instances), default="")
    candidates = [ds for ds in await qido.patient_studies(study.patient_id, study.patient_id_issuer,
                                                          template.inputs.modality)
                  if dj.first(ds, 0x0020000D) != study.study_uid and _when(ds) and (not current or _when(ds) < current)]
    candidates.sort(key=_when, reverse=True)
    for ds in candidates:
        prior, _ = await read_study(qido, str(dj.first(ds, 0x0020000D)))
        try:
            prior = dataclasses.replace(prior, series=tuple(input_series(prior, template)))
        except ValueError:
            continue  # an earlier study of that modality without a usable series
        return prior, f"prior study {prior.study_uid} of {prior.study_date or 'unknown date'}"
    return None, f"no prior: no earlier {template.inputs.modality} study of patient {study.patient_id} " \
                 f"(issuer {study.patient_id_issuer}) with series matching {template.name!r}"


async def plan(qido: Qido, template: ProcedureTemplate, study_uid: str, *, with_prior: bool = False,
               priority: str | None = None, parameters: dict[str, str] | None = None,
               readiness: str = "READY", stow_url: str | None = None, start: datetime | None = None) -> Plan:
    """Read, select, build: the Create payload for ``study_uid`` by ``template``."""
    study, instances = await read_study(qido, study_uid, [r.attribute for r in template.stat])
    return await plan_from(qido, template, study, instances, with_prior=with_prior, priority=priority,
                           parameters=parameters, readiness=readiness, stow_url=stow_url, start=start)


async def plan_from(qido: Qido, template: ProcedureTemplate, study: StudyRef, instances: Sequence[Dataset], *,
                    with_prior: bool = False, priority: str | None = None, parameters: dict[str, str] | None = None,
                    readiness: str = "READY", stow_url: str | None = None, start: datetime | None = None) -> Plan:
    inputs = input_series(study, template)
    stat = stat_reason(template, instances, inputs)
    chosen = priority or ("HIGH" if stat else template.priority)
    procedure = template.procedure(chosen, parameters)
    prior, notes = None, []
    if with_prior:
        prior, note = await find_prior(qido, study, instances, template)
        notes.append(note)
    payload = builder.build(study, procedure, inputs, prior=prior.series if prior else (), readiness=readiness,
                            stow_url=stow_url, start=start)
    return Plan(workitem_uid(study.study_uid, template.code.tuple()), payload, study, inputs, prior, chosen, stat,
                readiness, notes)


@dataclass
class Outcome:
    uid: str
    action: str  # created | exists | readied
    warnings: list[str] = field(default_factory=list)


async def create(ups: UpsClient, p: Plan) -> Outcome:
    """Create the workitem; an existing one of the same (study, procedure) is 'exists'."""
    try:
        created = await ups.create(p.payload, p.uid)
    except Conflict:
        return Outcome(p.uid, "exists")
    return Outcome(created.uid, "created", created.warnings)


async def ensure(ups: UpsClient, p: Plan) -> Outcome:
    """Create, or bring an existing workitem up to date: an INCOMPLETE one made while the
    study was still arriving gets the now complete inputs and READY. Only a SCHEDULED
    workitem is touched, and it needs no Transaction UID (nobody holds it yet)."""
    out = await create(ups, p)
    if out.action == "created" or p.readiness != "READY":
        return out
    current = await ups.retrieve(p.uid)
    if dj.first(current, STATE) != "SCHEDULED" or dj.first(current, INPUT_READINESS) != "INCOMPLETE":
        return out
    await ups.update(p.uid, {"00404021": p.payload["00404021"], "00404041": dj.element("CS", "READY")})
    return Outcome(p.uid, "readied")


__all__ = ["Plan", "Outcome", "plan", "plan_from", "create", "ensure", "read_study", "find_prior", "workitem_uid",
           "PacsError", "UpsError"]
