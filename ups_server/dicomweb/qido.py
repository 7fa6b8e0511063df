"""QIDO-RS (PS3.18 10.6) over the in-memory index: studies, a study's series, a series'
or a study's instances.

Matching is what a study-scoped client needs: UID list matching (comma-separated or
repeated), single-value matching with ``*``/``?`` wildcards on the text keys below, exact
numbers. A known attribute this store does not match on is ignored and named in a
Warning header (PS3.18 8.3.4.1 lets an origin server do that); a name that is no DICOM
attribute at all is a 400. ``includefield`` is accepted and ignored: every result carries
the fixed set of attributes rendered here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from upsrs import dicomjson as dj
from upsrs.dicomjson import element
from ups_server.dicomweb.errors import DicomWebFailure
from ups_server.dicomweb.index import InstanceRecord, SeriesRecord, StudyRecord

RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
UID_KEYS = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"}
MATCH_KEYS: dict[str, set[str]] = {
    "study": {"StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyID", "ModalitiesInStudy"},
    "series": {"SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber"},
    "instance": {"SOPInstanceUID", "SOPClassUID", "InstanceNumber", "SeriesInstanceUID"},
}


@dataclass
class Query:
    filters: dict[str, list[str]] = field(default_factory=dict)
    limit: int | None = None
    offset: int = 0
    ignored: list[str] = field(default_factory=list)


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit():
        raise DicomWebFailure(400, f"query parameter {name}={value!r} must be a non-negative integer")
    return int(value)


def parse_query(params: Iterable[tuple[str, str]], level: str) -> Query:
    q = Query()
    for name, value in params:
        if name.lower() in RESERVED:
            if name.lower() == "limit":
                q.limit = _non_negative(name, value)
            elif name.lower() == "offset":
                q.offset = _non_negative(name, value)
            continue
        try:
            keyword = dj.keyword(dj.parse_attribute(name))
        except KeyError:
            raise DicomWebFailure(400, f"query parameter {name!r} is neither a DICOM keyword nor a tag "
                                       "(GGGGEEEE) nor one of limit, offset, includefield, fuzzymatching") from None
        if keyword not in MATCH_KEYS[level]:
            if keyword not in q.ignored:
                q.ignored.append(keyword)
            continue
        values = [v.strip() for v in value.split(",")] if keyword in UID_KEYS else [value]
        q.filters.setdefault(keyword, []).extend(values)
    return q


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def _matches(value: Any, wanted: list[str]) -> bool:
    """Any of the wanted values matches (repeated keys and UID lists are alternatives);
    an empty wanted value is universal matching."""
    for w in wanted:
        if w == "" or w == "*":
            return True
        if isinstance(value, list):
            if any(_matches(v, [w]) for v in value):
                return True
        elif isinstance(value, int) or value is None:
            if w.lstrip("-").isdigit() and value == int(w):
                return True
        elif "*" in w or "?" in w:
            if _wildcard(w).fullmatch(value):
                return True
        elif value == w:
            return True
    return False


def _select(items: Iterable[Any], q: Query, attr: Mapping[str, Callable[[Any], Any]]) -> list[Any]:
    out = [it for it in items if all(_matches(attr[k](it), v) for k, v in q.filters.items())]
    end = None if q.limit is None else q.offset + q.limit
    return out[q.offset:end]


STUDY_ATTRS: dict[str, Callable[[StudyRecord], Any]] = {
    "StudyInstanceUID": lambda s: s.uid, "PatientID": lambda s: s.patient_id,
    "PatientName": lambda s: s.patient_name, "AccessionNumber": lambda s: s.accession_number,
    "StudyID": lambda s: s.study_id, "ModalitiesInStudy": lambda s: s.modalities,
}
SERIES_ATTRS: dict[str, Callable[[SeriesRecord], Any]] = {
    "SeriesInstanceUID": lambda s: s.uid, "Modality": lambda s: s.modality,
    "SeriesDescription": lambda s: s.description, "SeriesNumber": lambda s: s.number,
}
INSTANCE_ATTRS: dict[str, Callable[[tuple[str, InstanceRecord]], Any]] = {
    "SOPInstanceUID": lambda t: t[1].sop_instance_uid, "SOPClassUID": lambda t: t[1].sop_class_uid,
    "InstanceNumber": lambda t: t[1].instance_number, "SeriesInstanceUID": lambda t: t[0],
}


def select_studies(studies: Iterable[StudyRecord], q: Query) -> list[StudyRecord]:
    return _select(sorted(studies, key=lambda s: (s.study_date, s.study_time, s.uid)), q, STUDY_ATTRS)


def select_series(study: StudyRecord, q: Query) -> list[SeriesRecord]:
    return _select(study.sorted_series(), q, SERIES_ATTRS)


def select_instances(study: StudyRecord, series: SeriesRecord | None, q: Query) -> list[tuple[str, InstanceRecord]]:
    chosen = [series] if series is not None else study.sorted_series()
    return _select([(s.uid, i) for s in chosen for i in s.sorted_instances()], q, INSTANCE_ATTRS)


def _opt(vr: str, value: Any) -> dict[str, Any]:
    """Type 2 attribute: the value, or present and empty."""
    if value in (None, "", []):
        return element(vr)
    if vr == "PN":
        return element(vr, {"Alphabetic": value})
    return element(vr, *value) if isinstance(value, list) else element(vr, value)


def render_study(service: str, s: StudyRecord) -> dict[str, Any]:
    return {
        "00080020": _opt("DA", s.study_date), "00080030": _opt("TM", s.study_time),
        "00080050": _opt("SH", s.accession_number), "00080061": _opt("CS", s.modalities),
        "00081030": _opt("LO", s.description), "00081190": element("UR", f"{service}/studies/{s.uid}"),
        "00100010": _opt("PN", s.patient_name), "00100020": _opt("LO", s.patient_id),
        "0020000D": element("UI", s.uid), "00200010": _opt("SH", s.study_id),
        "00201206": element("IS", len(s.series)), "00201208": element("IS", s.instance_count),
    }


def render_series(service: str, study: StudyRecord, s: SeriesRecord) -> dict[str, Any]:
    return {
        "00080060": _opt("CS", s.modality), "0008103E": _opt("LO", s.description),
        "00081190": element("UR", f"{service}/studies/{study.uid}/series/{s.uid}"),
        "0020000D": element("UI", study.uid), "0020000E": element("UI", s.uid),
        "00200011": _opt("IS", s.number), "00201209": element("IS", len(s.instances)),
    }


def render_instance(service: str, study: StudyRecord, series_uid: str, r: InstanceRecord) -> dict[str, Any]:
    return {
        "00080016": element("UI", r.sop_class_uid), "00080018": element("UI", r.sop_instance_uid),
        "00081190": element("UR", f"{service}/studies/{study.uid}/series/{series_uid}/instances/{r.sop_instance_uid}"),
        "00083002": element("UI", r.transfer_syntax_uid),
        "0020000D": element("UI", study.uid), "0020000E": element("UI", series_uid),
        "00200013": _opt("IS", r.instance_number), "00280008": _opt("IS", r.number_of_frames),
        "00280010": _opt("US", r.rows), "00280011": _opt("US", r.columns),
    }
