"""What a performer reads from and writes into a workitem (DICOM JSON), in one place.

Reading: the Input Information Sequence (which series, where to retrieve them, which one
is the prior), the processing parameters, the requested output destination. Writing: the
progress item, the discontinuation (CID 9300) for a CANCELED end, and the Performed
Procedure Sequence with the Output Information Sequence for COMPLETED (PS3.4 CC.2.5.1.3,
spec digest sec. 6.5). MISSION lesson 4: these fields must be filled correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from upsrs import datetimes
from upsrs import dicomjson as dj

from performers.models.base import Code

Dataset = dict[str, Any]

STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
INPUT_SEQ = 0x00404021
TYPE_OF_INSTANCES = 0x0040E020
REFERENCED_SOP_SEQ = 0x00081199
REFERENCED_SOP_CLASS = 0x00081150
REFERENCED_SOP_INSTANCE = 0x00081155
WADO_RS_SEQ = 0x0040E025
RETRIEVE_URL = 0x00081190
OUTPUT_DESTINATION_SEQ = 0x00404070
STOW_RS_STORAGE_SEQ = 0x00404072
STORAGE_URL = 0x00404073
WORKITEM_CODE_SEQ = 0x00404018
STATE = 0x00741000
READINESS = 0x00404041
PRIORITY = 0x00741200
WORKLIST_LABEL = 0x00741202
PARAMETERS_SEQ = 0x00741210
PROGRESS_SEQ = 0x00741002
PROGRESS = 0x00741004
PROGRESS_DESCRIPTION = 0x00741006
CANCEL_DATETIME = 0x00404052
REASON_FOR_CANCELLATION = 0x00741238
DISCONTINUATION_SEQ = 0x0074100E
PERFORMED_SEQ = 0x00741216
PERFORMED_STATION_SEQ = 0x00404028
PERFORMED_START = 0x00404050
PERFORMED_END = 0x00404051
PERFORMED_CODE_SEQ = 0x00404019
PERFORMED_PARAMETERS_SEQ = 0x00741212
OUTPUT_INFO_SEQ = 0x00404033
VALUE_TYPE = 0x0040A040
CONCEPT_NAME_SEQ = 0x0040A043
NUMERIC_VALUE = 0x0040A30A
TEXT_VALUE = 0x0040A160
UNITS_SEQ = 0x004008EA
CONCEPT_CODE_SEQ = 0x0040A168
DATETIME_VALUE = 0x0040A120


@dataclass(frozen=True)
class InputSeries:
    """One item of the Input Information Sequence: a series and where to get it."""

    study_uid: str
    series_uid: str
    retrieve_url: str | None
    sop_instances: tuple[str, ...]


def code_item(code: Code) -> Dataset:
    """A code sequence item; values over 16 characters go to Long Code Value (SH limit)."""
    item = {"00080102": dj.element("SH", code.scheme), "00080104": dj.element("LO", code.meaning)}
    if len(code.value) > 16:
        item["00080119"] = dj.element("UC", code.value)
    else:
        item["00080100"] = dj.element("SH", code.value)
    if code.scheme_version:
        item["00080103"] = dj.element("SH", code.scheme_version)
    return item


def codes_of(doc: Dataset, tag: int) -> list[Code]:
    out = []
    for item in dj.items(doc, tag):
        value = dj.first(item, 0x00080100) or dj.first(item, 0x00080119) or dj.first(item, 0x00080120)
        if value:
            out.append(Code(str(value), str(dj.first(item, 0x00080102, "")), str(dj.first(item, 0x00080104, ""))))
    return out


def inputs(doc: Dataset) -> list[InputSeries]:
    out = []
    for item in dj.items(doc, INPUT_SEQ):
        urls = [dj.first(r, RETRIEVE_URL) for r in dj.items(item, WADO_RS_SEQ)]
        series = dj.first(item, SERIES_UID)
        if not series:
            continue
        out.append(InputSeries(str(dj.first(item, STUDY_UID, "")), str(series),
                               next((str(u) for u in urls if u), None),
                               tuple(str(dj.first(r, REFERENCED_SOP_INSTANCE)) for r in dj.items(item, REFERENCED_SOP_SEQ)
                                     if dj.first(r, REFERENCED_SOP_INSTANCE))))
    return out


def roles(doc: Dataset) -> dict[str, InputSeries]:
    """"current": the first input series of the workitem's own study (where results go,
    MISSION lesson 6); "prior": the first input series of another study."""
    study = dj.first(doc, STUDY_UID)
    found: dict[str, InputSeries] = {}
    for s in inputs(doc):
        role = "current" if (s.study_uid == study or not study) else "prior"
        found.setdefault(role, s)
    return found


def parameters(doc: Dataset) -> dict[str, str | float]:
    """Scheduled Processing Parameters, keyed by concept code meaning and by code value."""
    out: dict[str, str | float] = {}
    for item in dj.items(doc, PARAMETERS_SEQ):
        names = codes_of(item, CONCEPT_NAME_SEQ)
        if not names:
            continue
        kind = dj.first(item, VALUE_TYPE)
        value: str | float | None
        if kind == "NUMERIC":
            raw = dj.first(item, NUMERIC_VALUE)
            value = float(raw) if raw not in (None, "") else None
        elif kind == "CODE":
            concept = codes_of(item, CONCEPT_CODE_SEQ)
            value = concept[0].value if concept else None
        else:
            value = dj.first(item, TEXT_VALUE) or dj.first(item, DATETIME_VALUE)
        if value is not None:
            out[names[0].meaning] = value
            out[names[0].value] = value
    return out


def stow_url(doc: Dataset) -> str | None:
    """The STOW-RS Storage URL the requester asked results to be sent to, if any."""
    for dest in dj.items(doc, OUTPUT_DESTINATION_SEQ):
        for storage in dj.items(dest, STOW_RS_STORAGE_SEQ):
            url = dj.first(storage, STORAGE_URL)
            if url:
                return str(url)
    return None


def progress(percent: float, description: str) -> Dataset:
    return {dj.key(PROGRESS_SEQ): dj.element("SQ", {
        dj.key(PROGRESS): dj.element("DS", f"{percent:.0f}"),
        dj.key(PROGRESS_DESCRIPTION): dj.element("ST", description[:1024]),
    })}


def discontinuation(percent: float, reason: str, code: Code) -> Dataset:
    """Progress item of a performer-side cancellation (final-state X attributes)."""
    return {dj.key(PROGRESS_SEQ): dj.element("SQ", {
        dj.key(PROGRESS): dj.element("DS", f"{percent:.0f}"),
        dj.key(PROGRESS_DESCRIPTION): dj.element("ST", "Canceled"),
        dj.key(CANCEL_DATETIME): dj.element("DT", datetimes.dt_now()),
        dj.key(REASON_FOR_CANCELLATION): dj.element("LT", reason[:10240]),
        dj.key(DISCONTINUATION_SEQ): dj.element("SQ", code_item(code)),
    })}


def parameter_item(name: str, value: str | float) -> Dataset:
    concept = Code(name, "99AIW", name[:64])
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {dj.key(VALUE_TYPE): dj.element("CS", "NUMERIC"),
                dj.key(CONCEPT_NAME_SEQ): dj.element("SQ", code_item(concept)),
                dj.key(NUMERIC_VALUE): dj.element("DS", f"{value:.6g}"),
                dj.key(UNITS_SEQ): dj.element("SQ", code_item(Code("1", "UCUM", "no units")))}
    return {dj.key(VALUE_TYPE): dj.element("CS", "TEXT"),
            dj.key(CONCEPT_NAME_SEQ): dj.element("SQ", code_item(concept)),
            dj.key(TEXT_VALUE): dj.element("UT", str(value))}


@dataclass(frozen=True)
class OutputInstance:
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    retrieve_url: str | None


def output_information(outputs: Iterable[OutputInstance]) -> list[Dataset]:
    """Output Information Sequence items: one per output series, every instance listed,
    with a WADO-RS Retrieve URL of the series (spec digest 6.5, macro CC.2.5-2c)."""
    by_series: dict[tuple[str, str], list[OutputInstance]] = {}
    for o in outputs:
        by_series.setdefault((o.study_uid, o.series_uid), []).append(o)
    items = []
    for (study, series), members in by_series.items():
        item: Dataset = {
            dj.key(TYPE_OF_INSTANCES): dj.element("CS", "DICOM"),
            dj.key(STUDY_UID): dj.element("UI", study),
            dj.key(SERIES_UID): dj.element("UI", series),
            dj.key(REFERENCED_SOP_SEQ): dj.element("SQ", *({
                dj.key(REFERENCED_SOP_CLASS): dj.element("UI", m.sop_class_uid),
                dj.key(REFERENCED_SOP_INSTANCE): dj.element("UI", m.sop_instance_uid)} for m in members)),
        }
        url = series_url(members[0].retrieve_url, study, series)
        if not url:  # the macro needs a way to retrieve them (CC.2.5-2c)
            raise ValueError(f"output series {series} has no WADO-RS Retrieve URL")
        item[dj.key(WADO_RS_SEQ)] = dj.element("SQ", {dj.key(RETRIEVE_URL): dj.element("UR", url)})
        items.append(item)
    return items


def series_url(instance_url: str | None, study: str, series: str) -> str | None:
    """The series-level WADO-RS URL from an instance-level Retrieve URL."""
    if not instance_url:
        return None
    base = instance_url.rsplit("/studies/", 1)[0]
    return f"{base}/studies/{study}/series/{series}"


def performed(*, station: Code, workitem_code: Code, start: str, end: str,
              parameters: dict[str, str | float], outputs: Iterable[OutputInstance]) -> Dataset:
    """The Update that meets the COMPLETED final-state requirements (PS3.4 CC.2.5.1.3.1)."""
    item: Dataset = {
        dj.key(PERFORMED_STATION_SEQ): dj.element("SQ", code_item(station)),
        dj.key(PERFORMED_START): dj.element("DT", start),
        dj.key(PERFORMED_END): dj.element("DT", end),
        dj.key(PERFORMED_CODE_SEQ): dj.element("SQ", code_item(workitem_code)),
        dj.key(OUTPUT_INFO_SEQ): dj.element("SQ", *output_information(outputs)),
    }
    if parameters:
        item[dj.key(PERFORMED_PARAMETERS_SEQ)] = dj.element(
            "SQ", *(parameter_item(k, v) for k, v in parameters.items()))
    return {dj.key(PERFORMED_SEQ): dj.element("SQ", item)}
