"""What a QA person reads off a workitem: DICOM JSON -> plain fields.

Workitems arrive as DICOM JSON from a search (return keys only) or a retrieve (the whole
workitem). Both go through here, so the table, the workitem page and the terminal agree
on what "procedure", "performer" or "modality" mean. Everything tolerates absent or
malformed elements: a watcher must show what it can, never crash on a peculiar workitem.
"""

from __future__ import annotations

from typing import Any

from upsrs import datetimes
from upsrs import dicomjson as dj

STATE = 0x00741000
READINESS = 0x00404041
PRIORITY = 0x00741200
LABEL = 0x00741204
WORKLIST = 0x00741202
WORKITEM_CODE_SEQ = 0x00404018
STATION_SEQ = 0x00404025
HUMAN_PERFORMERS_SEQ = 0x00404034
HUMAN_PERFORMER_CODE_SEQ = 0x00404009
HUMAN_PERFORMER_NAME = 0x00404037
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
REQUEST_SEQ = 0x0040A370
ACCESSION = 0x00080050
INPUT_SEQ = 0x00404021
REF_SOP_SEQ = 0x00081199
REF_SOP_CLASS = 0x00081150
REF_SOP_INSTANCE = 0x00081155
WADO_SEQ = 0x0040E025
RETRIEVE_URL = 0x00081190
PROGRESS_SEQ = 0x00741002
PROGRESS = 0x00741004
PROGRESS_TEXT = 0x00741006
REASON = 0x00741238
DISCONTINUATION_SEQ = 0x0074100E
PERFORMED_SEQ = 0x00741216
PERFORMED_STATION_SEQ = 0x00404028
OUTPUT_SEQ = 0x00404033
START_DT = 0x00404005
MODIFIED_DT = 0x00404010
PERFORMED_START = 0x00404050
PERFORMED_END = 0x00404051
CODE_VALUE, CODE_SCHEME, CODE_MEANING, LONG_CODE_VALUE = 0x00080100, 0x00080102, 0x00080104, 0x00080119

# Storage SOP classes an AI task commonly reads or writes -> the modality a person filters by.
MODALITY_BY_SOP_CLASS = {
    "1.2.840.10008.5.1.4.1.1.4": "MR", "1.2.840.10008.5.1.4.1.1.4.1": "MR", "1.2.840.10008.5.1.4.1.1.4.4": "MR",
    "1.2.840.10008.5.1.4.1.1.2": "CT", "1.2.840.10008.5.1.4.1.1.2.1": "CT",
    "1.2.840.10008.5.1.4.1.1.128": "PT", "1.2.840.10008.5.1.4.1.1.130": "PT",
    "1.2.840.10008.5.1.4.1.1.1": "CR", "1.2.840.10008.5.1.4.1.1.1.1": "DX", "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",
    "1.2.840.10008.5.1.4.1.1.1.2": "MG", "1.2.840.10008.5.1.4.1.1.1.2.1": "MG", "1.2.840.10008.5.1.4.1.1.13.1.3": "MG",
    "1.2.840.10008.5.1.4.1.1.6.1": "US", "1.2.840.10008.5.1.4.1.1.20": "NM", "1.2.840.10008.5.1.4.1.1.77.1.6": "SM",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.88.22": "SR", "1.2.840.10008.5.1.4.1.1.88.33": "SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "SR", "1.2.840.10008.5.1.4.1.1.11.1": "PR", "1.2.840.10008.5.1.4.1.1.7": "OT",
}


def text(value: Any) -> str:
    """A value as display text: person names by their alphabetic form, others by str()."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return str(value.get("Alphabetic") or value.get("Ideographic") or value.get("Phonetic") or "")
    return str(value)


def person(value: Any) -> str:
    """DOE^JANE -> DOE, JANE (how people read names on a worklist)."""
    name = text(value)
    parts = [p for p in name.split("^") if p]
    return ", ".join(parts[:2]) + (" " + " ".join(parts[2:]) if len(parts) > 2 else "") if parts else ""


def code_text(item: dict[str, Any]) -> str:
    meaning = dj.first(item, CODE_MEANING)
    value = dj.first(item, CODE_VALUE) or dj.first(item, LONG_CODE_VALUE)
    return str(meaning or value or "")


def code_triplet(item: dict[str, Any]) -> dict[str, str]:
    return {"value": text(dj.first(item, CODE_VALUE) or dj.first(item, LONG_CODE_VALUE)),
            "scheme": text(dj.first(item, CODE_SCHEME)), "meaning": text(dj.first(item, CODE_MEANING))}


def dt_epoch(value: Any) -> float | None:
    """A DT value as epoch seconds (start of its range), or None when absent/unparseable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetimes.dt_interval(value)[0]
    except (ValueError, TypeError, OverflowError):
        return None


def as_percent(value: Any) -> float | None:
    """Procedure Step Progress (DS, percent) as a number in 0..100, or None when not one."""
    try:
        pct = float(value)
    except (TypeError, ValueError):
        return None
    if pct != pct or pct < 0 or pct > 100:  # NaN or out of range: not a percentage
        return None
    return pct


def performer(ds: dict[str, Any]) -> str:
    """Who does (or did) it: the performed station when known, else the scheduled station
    or human performer."""
    for p in dj.items(ds, PERFORMED_SEQ):
        names = [code_text(i) for i in dj.items(p, PERFORMED_STATION_SEQ)]
        if any(names):
            return ", ".join(n for n in names if n)
    names = [code_text(i) for i in dj.items(ds, STATION_SEQ)]
    for hp in dj.items(ds, HUMAN_PERFORMERS_SEQ):
        names += [code_text(i) for i in dj.items(hp, HUMAN_PERFORMER_CODE_SEQ)]
        names.append(person(dj.first(hp, HUMAN_PERFORMER_NAME)))
    return ", ".join(n for n in names if n)


def summary(ds: dict[str, Any]) -> dict[str, Any]:
    """The table fields present in ``ds`` (a key is left out when ``ds`` does not carry its
    element, so a partial dataset never blanks what a fuller one told us)."""
    out: dict[str, Any] = {}
    if dj.key(PRIORITY) in ds:
        out["priority"] = text(dj.first(ds, PRIORITY)) or "MEDIUM"
    codes = dj.items(ds, WORKITEM_CODE_SEQ)
    if dj.key(LABEL) in ds or codes:
        out["procedure"] = text(dj.first(ds, LABEL)) or (code_text(codes[0]) if codes else "")
        out["procedure_code"] = code_triplet(codes[0])["value"] if codes else ""
    if dj.key(WORKLIST) in ds:
        out["worklist"] = text(dj.first(ds, WORKLIST))
    if dj.key(PATIENT_NAME) in ds:
        out["patient"] = person(dj.first(ds, PATIENT_NAME))
    if dj.key(PATIENT_ID) in ds:
        out["patient_id"] = text(dj.first(ds, PATIENT_ID))
    if dj.key(STUDY_UID) in ds:
        out["study_uid"] = text(dj.first(ds, STUDY_UID))
    requests = dj.items(ds, REQUEST_SEQ)
    if requests:
        out["accession"] = text(dj.first(requests[0], ACCESSION))
    if dj.key(INPUT_SEQ) in ds:
        ins = inputs(ds)
        out["inputs"] = ins
        out["modality"] = "/".join(sorted({m for i in ins for m in i["modalities"]}))
    if dj.key(READINESS) in ds:
        out["readiness"] = text(dj.first(ds, READINESS))
    if any(dj.key(t) in ds for t in (STATION_SEQ, HUMAN_PERFORMERS_SEQ, PERFORMED_SEQ)):
        name = performer(ds)
        if name:
            out["performer"] = name
    if dj.key(START_DT) in ds:
        out["scheduled_start"] = dt_epoch(dj.first(ds, START_DT))
    if dj.key(PERFORMED_SEQ) in ds:
        outs = outputs(ds)
        if outs:
            out["outputs"] = outs
    return out


def _reference(item: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An item of the Referenced Instances and Access macro (inputs and outputs alike):
    its study, series, instance count and WADO-RS URL, and the SOP classes it lists."""
    sops = dj.items(item, REF_SOP_SEQ)
    return {
        "study_uid": text(dj.first(item, STUDY_UID)),
        "series_uid": text(dj.first(item, SERIES_UID)),
        "instances": len(sops),
        "url": text(next((dj.first(w, RETRIEVE_URL) for w in dj.items(item, WADO_SEQ)), "")),
    }, [text(dj.first(s, REF_SOP_CLASS)) for s in sops]


def inputs(ds: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for item in dj.items(ds, INPUT_SEQ):
        ref, classes = _reference(item)
        ref["modalities"] = sorted({MODALITY_BY_SOP_CLASS.get(c, "") for c in classes} - {""})
        out.append(ref)
    return out


def outputs(ds: dict[str, Any]) -> list[dict[str, Any]]:
    """The Output Information Sequence of every Performed Procedure item: what the AI made."""
    out = []
    for performed in dj.items(ds, PERFORMED_SEQ):
        for item in dj.items(performed, OUTPUT_SEQ):
            ref, classes = _reference(item)
            ref["kinds"] = sorted({MODALITY_BY_SOP_CLASS.get(c, c) for c in classes})
            out.append(ref)
    return out


def progress(ds: dict[str, Any]) -> tuple[float | None, str, str]:
    """(percent, description, discontinuation reason) from the Progress Information item."""
    items = dj.items(ds, PROGRESS_SEQ)
    if not items:
        return None, "", ""
    item = items[0]
    return as_percent(dj.first(item, PROGRESS)), text(dj.first(item, PROGRESS_TEXT)), reason(item)


def reason(ds: dict[str, Any]) -> str:
    """A discontinuation reason as people read it: the code meaning, then the free text."""
    codes = [code_text(c) for c in dj.items(ds, DISCONTINUATION_SEQ)]
    words = [c for c in codes if c]
    free = text(dj.first(ds, REASON))
    if free and free not in words:
        words.append(free)
    return " — ".join(words)
