"""Complete AIW-I workitems from a study's DICOM attributes (RAD-80 payloads).

The links are what matter (MISSION: "Study Instance UID, Accession Number (with its
issuer) and Patient ID (with its issuer) on every workitem"): every attribute here comes
from the study's own instances or QIDO-RS answers, never typed in. Type 2 attributes with
nothing to say are sent empty, as Table CC.2.5-3 asks, so the Task Manager has nothing to
coerce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from pydicom.valuerep import format_number_as_ds

from upsrs import dicomjson as dj
from upsrs.uids import UPS_PUSH_SOP_CLASS

Dataset = dict[str, Any]
CodeT = tuple[str, str, str]  # (value, scheme, meaning)


@dataclass(frozen=True)
class SeriesRef:
    study_uid: str
    series_uid: str
    modality: str
    description: str = ""
    instances: tuple[tuple[str, str], ...] = ()  # (SOP Class UID, SOP Instance UID)
    retrieve_url: str | None = None  # WADO-RS series URL


@dataclass(frozen=True)
class StudyRef:
    """What a workitem needs to know of a study: identity links and its series."""

    study_uid: str
    patient_id: str
    patient_id_issuer: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    accession: str = ""
    accession_issuer: Dataset = field(default_factory=dict)  # an Issuer of Accession Number Sequence item
    study_date: str = ""
    study_description: str = ""
    requested_procedure_id: str = ""
    series: tuple[SeriesRef, ...] = ()


@dataclass(frozen=True)
class Parameter:
    """A Scheduled Processing Parameter: NUMERIC (with UCUM unit), TEXT or CODE."""

    name: CodeT
    value: str | float | CodeT
    unit: CodeT | None = None


@dataclass(frozen=True)
class Procedure:
    """Which AI task, where, how urgent."""

    workitem_code: CodeT
    label: str
    station: CodeT | None = None
    worklist_label: str = ""
    priority: str = "MEDIUM"
    parameters: tuple[Parameter, ...] = ()
    expected_minutes: float | None = None


def code_item(code: CodeT) -> Dataset:
    value, scheme, meaning = code
    item = {"00080102": dj.element("SH", scheme), "00080104": dj.element("LO", meaning)}
    item["00080119" if len(value) > 16 else "00080100"] = dj.element("UC" if len(value) > 16 else "SH", value)
    return item


def _seq(*items: Dataset) -> dict[str, Any]:
    return dj.element("SQ", *items) if items else {"vr": "SQ"}


def _el(vr: str, value: Any) -> dict[str, Any]:
    return dj.element(vr, value) if value not in (None, "") else {"vr": vr}


def input_item(series: SeriesRef) -> Dataset:
    if not series.instances:  # Referenced SOP Sequence is type 1 in CC.2.5-2c
        raise ValueError(f"input series {series.series_uid} lists no instances")
    item: Dataset = {
        "0040E020": dj.element("CS", "DICOM"),
        "0020000D": dj.element("UI", series.study_uid),
        "0020000E": dj.element("UI", series.series_uid),
        "00081199": _seq(*({"00081150": dj.element("UI", c), "00081155": dj.element("UI", i)}
                           for c, i in series.instances)),
    }
    if series.retrieve_url:
        item["0040E025"] = _seq({"00081190": dj.element("UR", series.retrieve_url)})
    return item


def parameter_item(p: Parameter) -> Dataset:
    item: Dataset = {"0040A043": _seq(code_item(p.name))}
    if isinstance(p.value, tuple):
        item["0040A040"] = dj.element("CS", "CODE")
        item["0040A168"] = _seq(code_item(p.value))
    elif isinstance(p.value, (int, float)):
        item["0040A040"] = dj.element("CS", "NUMERIC")
        if not math.isfinite(p.value):
            raise ValueError(f"parameter {p.name[2]!r}: {p.value} is not a finite number")
        item["0040A30A"] = dj.element("DS", format_number_as_ds(float(p.value)))
        item["004008EA"] = _seq(code_item(p.unit or ("1", "UCUM", "no units")))
    else:
        item["0040A040"] = dj.element("CS", "TEXT")
        item["0040A160"] = dj.element("UT", p.value)
    return item


def build(study: StudyRef, procedure: Procedure, series: Sequence[SeriesRef], *,
          prior: Sequence[SeriesRef] = (), readiness: str = "READY", stow_url: str | None = None,
          start: datetime | None = None) -> Dataset:
    """The Create Workitem payload: results go into ``study`` (its Study Instance UID),
    ``prior`` series (of an earlier study) are inputs for comparison."""
    start = start or datetime.now(timezone.utc)
    fmt = "%Y%m%d%H%M%S%z"
    doc: Dataset = {
        "00080016": dj.element("UI", UPS_PUSH_SOP_CLASS),
        "00081195": {"vr": "UI"},  # type 2 at N-CREATE: empty, the lock is taken by a claim
        "00100010": _el("PN", {"Alphabetic": study.patient_name} if study.patient_name else None),
        "00100020": _el("LO", study.patient_id),
        "00100021": _el("LO", study.patient_id_issuer),
        "00100024": _seq(),
        "00100030": _el("DA", study.birth_date),
        "00100040": _el("CS", study.sex),
        "00101002": _seq(),
        "0020000D": dj.element("UI", study.study_uid),
        "00380010": {"vr": "LO"},
        "00380014": _seq(),
        "00081080": {"vr": "LO"},
        "00081084": _seq(),
        "00400400": {"vr": "LT"},
        "00404005": dj.element("DT", start.strftime(fmt)),
        "00404011": _el("DT", (start + timedelta(minutes=procedure.expected_minutes)).strftime(fmt)
                        if procedure.expected_minutes else None),
        "00404018": _seq(code_item(procedure.workitem_code)),
        "00404021": _seq(*(input_item(s) for s in (*series, *prior))),
        "00404025": _seq(code_item(procedure.station)) if procedure.station else _seq(),
        "00404026": _seq(),
        "00404027": _seq(),
        "00404034": _seq(),
        "00404041": dj.element("CS", readiness),
        "0040A370": _seq({
            "0020000D": dj.element("UI", study.study_uid),
            "00080050": _el("SH", study.accession),
            "00080051": _seq(study.accession_issuer) if study.accession_issuer else _seq(),
            "00401001": _el("SH", study.requested_procedure_id or study.accession),
            "00321060": _el("LO", study.study_description),
            "00321064": _seq(),
            "00400026": _seq(),
            "00400027": _seq(),
        }),
        "00741000": dj.element("CS", "SCHEDULED"),
        "00741002": _seq(),
        "00741200": dj.element("CS", procedure.priority),
        "00741202": _el("LO", procedure.worklist_label),
        "00741204": dj.element("LO", procedure.label),
        "00741210": _seq(*(parameter_item(p) for p in procedure.parameters)),
        "00741216": _seq(),
    }
    if stow_url:
        doc["00404070"] = _seq({"00404072": _seq({"00404073": dj.element("UR", stow_url)})})
    return doc


def study_from_datasets(datasets: Sequence[Any], wado_base: str) -> StudyRef:
    """A StudyRef from a study's instances (pydicom datasets, e.g. read before storing
    them): identity from the first instance, one SeriesRef per series with its instances
    and the series' WADO-RS URL under ``wado_base`` (the DICOMweb service root)."""
    if not datasets:
        raise ValueError("no instances: a study needs at least one")
    first = datasets[0]
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    if len(studies) != 1:
        raise ValueError(f"instances of {len(studies)} studies given; one study at a time")
    by_series: dict[str, list[Any]] = {}
    for ds in datasets:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    base = wado_base.rstrip("/")
    issuer: Dataset = {}
    if "IssuerOfAccessionNumberSequence" in first and first.IssuerOfAccessionNumberSequence:
        item = first.IssuerOfAccessionNumberSequence[0]
        for tag, vr, kw in (("00400031", "UT", "LocalNamespaceEntityID"), ("00400032", "UT", "UniversalEntityID"),
                            ("00400033", "CS", "UniversalEntityIDType")):
            if kw in item and item.get(kw):
                issuer[tag] = dj.element(vr, str(item.get(kw)))
    study_uid = str(first.StudyInstanceUID)
    return StudyRef(
        study_uid=study_uid, patient_id=str(first.get("PatientID", "")),
        patient_id_issuer=str(first.get("IssuerOfPatientID", "")), patient_name=str(first.get("PatientName", "")),
        birth_date=str(first.get("PatientBirthDate", "")), sex=str(first.get("PatientSex", "")),
        accession=str(first.get("AccessionNumber", "")), accession_issuer=issuer,
        study_date=str(first.get("StudyDate", "")), study_description=str(first.get("StudyDescription", "")),
        series=tuple(SeriesRef(study_uid, uid, str(members[0].get("Modality", "")),
                               str(members[0].get("SeriesDescription", "")),
                               tuple((str(m.SOPClassUID), str(m.SOPInstanceUID)) for m in members),
                               f"{base}/studies/{study_uid}/series/{uid}")
                     for uid, members in by_series.items()))


def _text(ds: Dataset, tag: int) -> str:
    value = dj.first(ds, tag)
    if isinstance(value, dict):  # PN: the Alphabetic group is what people and matching use
        return str(value.get("Alphabetic", ""))
    return "" if value is None else str(value)


def issuer_item(sequence_items: Sequence[Dataset]) -> Dataset:
    """An Issuer of Accession Number Sequence item with only the three identifying attributes."""
    out: Dataset = {}
    for item in sequence_items[:1]:
        for tag, vr in (("00400031", "UT"), ("00400032", "UT"), ("00400033", "CS")):
            value = dj.first(item, int(tag, 16))
            if value not in (None, ""):
                out[tag] = dj.element(vr, str(value))
    return out


def study_from_qido(instances: Sequence[Dataset], wado_base: str, *,
                    accession_issuer: Dataset | None = None) -> StudyRef:
    """A StudyRef from an instance-level QIDO-RS answer (DICOM JSON, one dataset per
    instance, patient/study/series attributes included) of ONE study.

    ``accession_issuer`` (an Issuer of Accession Number Sequence item) replaces the one in
    the answer, for archives that do not return sequences in QIDO. Series keep the order of
    their Series Number; instances the order of the answer."""
    if not instances:
        raise ValueError("no instances: a study needs at least one")
    studies = {dj.first(ds, 0x0020000D) for ds in instances}
    if len(studies) != 1 or None in studies:
        raise ValueError(f"the QIDO answer holds {len(studies)} Study Instance UIDs; one study at a time")
    first = instances[0]
    study_uid = str(dj.first(first, 0x0020000D))
    by_series: dict[str, list[Dataset]] = {}
    for ds in instances:
        series_uid = dj.first(ds, 0x0020000E)
        if not series_uid or not dj.first(ds, 0x00080018) or not dj.first(ds, 0x00080016):
            raise ValueError(f"an instance of study {study_uid} lacks its Series Instance UID, SOP Instance UID "
                             "or SOP Class UID in the QIDO answer")
        by_series.setdefault(str(series_uid), []).append(ds)

    def number(members: list[Dataset]) -> float:
        n = dj.first(members[0], 0x00200011)
        try:
            return float(n)
        except (TypeError, ValueError):
            return math.inf

    base = wado_base.rstrip("/")
    ordered = sorted(by_series.items(), key=lambda kv: number(kv[1]))
    issuer = accession_issuer if accession_issuer is not None else issuer_item(dj.items(first, 0x00080051))
    return StudyRef(
        study_uid=study_uid, patient_id=_text(first, 0x00100020), patient_id_issuer=_text(first, 0x00100021),
        patient_name=_text(first, 0x00100010), birth_date=_text(first, 0x00100030), sex=_text(first, 0x00100040),
        accession=_text(first, 0x00080050), accession_issuer=issuer, study_date=_text(first, 0x00080020),
        study_description=_text(first, 0x00081030), requested_procedure_id=_text(first, 0x00401001),
        series=tuple(SeriesRef(study_uid, uid, _text(members[0], 0x00080060), _text(members[0], 0x0008103E),
                               tuple((str(dj.first(m, 0x00080016)), str(dj.first(m, 0x00080018))) for m in members),
                               f"{base}/studies/{study_uid}/series/{uid}")
                     for uid, members in ordered))
