"""Realistic AIW-I workitems for the tests and benchmarks (DICOM JSON)."""

from __future__ import annotations

import copy
from typing import Any

from upsrs.uids import new_uid


def code(value: str, scheme: str, meaning: str) -> dict[str, Any]:
    return {"00080100": {"vr": "SH", "Value": [value]}, "00080102": {"vr": "SH", "Value": [scheme]},
            "00080104": {"vr": "LO", "Value": [meaning]}}


def sq(*items: dict[str, Any]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": list(items)} if items else {"vr": "SQ"}


def v(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def workitem(*, patient_id: str = "PAT-0001", accession: str = "ACC-0001", study_uid: str | None = None,
             series_uids: tuple[str, ...] | None = None, label: str = "MS lesion detection",
             worklist: str = "AI", priority: str = "MEDIUM", readiness: str = "READY",
             start: str = "20261122100000", workitem_code: tuple[str, str, str] = ("AIW-MSL", "99AIW", "MS lesion segmentation"),
             station: tuple[str, str, str] | None = ("AIW-NODE-1", "99AIW", "aiw reference performer"),
             patient_name: str = "DOE^JANE", wado: str = "http://pacs.example/dicom-web") -> dict[str, Any]:
    """A complete workitem: every N-CREATE type 1 and 2 attribute of Table CC.2.5-3."""
    study_uid = study_uid or new_uid()
    series_uids = series_uids or (new_uid(),)
    inputs = [{
        "0040E020": v("CS", "DICOM"),
        "0020000D": v("UI", study_uid),
        "0020000E": v("UI", s),
        "00081199": sq(*({"00081150": v("UI", "1.2.840.10008.5.1.4.1.1.4"), "00081155": v("UI", new_uid())} for _ in range(3))),
        "0040E025": sq({"00081190": v("UR", f"{wado}/studies/{study_uid}/series/{s}")}),
    } for s in series_uids]
    issuer = {"00400031": v("UT", "HOSP"), "00400032": v("UT", "1.2.3.4.5"), "00400033": v("CS", "ISO")}
    return {
        "00080016": v("UI", "1.2.840.10008.5.1.4.34.6.1"),
        "00081195": v("UI"),
        "00100010": v("PN", {"Alphabetic": patient_name}),
        "00100020": v("LO", patient_id),
        "00100021": v("LO", "HOSP"),
        "00100024": sq(),
        "00100030": v("DA", "19700101"),
        "00100040": v("CS", "F"),
        "00101002": sq(),
        "0020000D": v("UI", study_uid),
        "00380010": v("LO"),
        "00380014": sq(),
        "00081080": v("LO"),
        "00081084": sq(),
        "00400400": v("LT"),
        "00404005": v("DT", start),
        "00404011": v("DT"),
        "00404018": sq(code(*workitem_code)),
        "00404021": sq(*inputs),
        "00404025": sq(code(*station)) if station else sq(),
        "00404026": sq(),
        "00404027": sq(),
        "00404034": sq(),
        "00404041": v("CS", readiness),
        "0040A370": sq({
            "0020000D": v("UI", study_uid),
            "00080050": v("SH", accession),
            "00080051": sq(issuer),
            "00401001": v("SH", "RP-" + accession),
            "00321060": v("LO", "MR brain"),
            "00321064": sq(),
            "00400026": sq(),
            "00400027": sq(),
        }),
        "00741000": v("CS", "SCHEDULED"),
        "00741002": sq(),
        "00741200": v("CS", priority),
        "00741202": v("LO", worklist),
        "00741204": v("LO", label),
        "00741210": sq({
            "0040A040": v("CS", "NUMERIC"),
            "0040A043": sq(code("AIW-MINVOL", "99AIW", "Minimum lesion volume")),
            "0040A30A": v("DS", "10"),
            "004008EA": sq(code("mm3", "UCUM", "cubic millimeter")),
        }),
        "00741216": sq(),
    }


def performed(now: str = "20261122101500", outputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An Update dataset that meets the COMPLETED final-state requirements (spec sec. 3.2)."""
    return {"00741216": sq({
        "00404028": sq(code("AIW-NODE-1", "99AIW", "aiw reference performer")),
        "00404050": v("DT", now),
        "00404019": sq(code("AIW-MSL", "99AIW", "MS lesion segmentation")),
        "00404051": v("DT", now),
        "00404033": sq(*(outputs or [])),
    })}


def progress(percent: int, description: str = "") -> dict[str, Any]:
    item = {"00741004": v("DS", str(percent))}
    if description:
        item["00741006"] = v("ST", description)
    return {"00741002": sq(item)}


def state(value: str, tuid: str | None) -> dict[str, Any]:
    ds = {"00741000": v("CS", value)}
    if tuid is not None:
        ds["00081195"] = v("UI", tuid)
    return ds


def clone(ds: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(ds)
