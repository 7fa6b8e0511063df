"""UPS event reports (PS3.4 CC.2.4, Table CC.2.4-1) as DICOM JSON.

The Task Manager records the *event information* of each event when the change happens;
the command attributes (Affected SOP Class/Instance UID, Message ID, Event Type ID) are
added when a message is sent (``message``).
"""

from __future__ import annotations

from typing import Any

from upsrs import dicomjson as dj
from upsrs.uids import UPS_PUSH_SOP_CLASS

STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5
EVENT_NAMES = {1: "UPS State Report", 2: "UPS Cancel Requested", 3: "UPS Progress Report",
               4: "SCP Status Change", 5: "UPS Assigned"}

PROCEDURE_STEP_STATE = 0x00741000
INPUT_READINESS_STATE = 0x00404041
PROGRESS_INFO_SEQ = 0x00741002
REASON_FOR_CANCELLATION = 0x00741238
DISCONTINUATION_REASON_SEQ = 0x0074100E
REQUESTING_AE = 0x00741236
CONTACT_URI = 0x0074100A
CONTACT_DISPLAY_NAME = 0x0074100C
STATION_NAME_SEQ = 0x00404025
HUMAN_PERFORMERS_SEQ = 0x00404034
HUMAN_PERFORMER_CODE_SEQ = 0x00404009
HUMAN_PERFORMER_ORG = 0x00404036
PROGRESS = 0x00741004
PROGRESS_DESCRIPTION = 0x00741006
COMMUNICATIONS_URI_SEQ = 0x00741008


def _copy(src: dj.Dataset, dst: dj.Dataset, *tags: int) -> None:
    for t in tags:
        k = dj.key(t)
        if k in src and dj.has_value(src[k]):
            dst[k] = src[k]


def state_report(ds: dj.Dataset) -> dj.Dataset:
    """Procedure Step State and Input Readiness State; on CANCELED also the reason and
    discontinuation code from the Progress Information Sequence."""
    info: dj.Dataset = {}
    _copy(ds, info, PROCEDURE_STEP_STATE, INPUT_READINESS_STATE)
    if dj.first(ds, PROCEDURE_STEP_STATE) == "CANCELED":
        progress = dj.items(ds, PROGRESS_INFO_SEQ)
        if progress:
            _copy(progress[0], info, REASON_FOR_CANCELLATION, DISCONTINUATION_REASON_SEQ)
    return info


def cancel_requested(requesting_ae: str, request: dj.Dataset) -> dj.Dataset:
    """Requesting AE plus whatever reason, code and contact the request carried (1C)."""
    info: dj.Dataset = {dj.key(REQUESTING_AE): dj.element("AE", requesting_ae)}
    _copy(request, info, REASON_FOR_CANCELLATION, DISCONTINUATION_REASON_SEQ, CONTACT_URI, CONTACT_DISPLAY_NAME)
    return info


def progress_report(ds: dj.Dataset) -> dj.Dataset:
    k = dj.key(PROGRESS_INFO_SEQ)
    return {k: ds.get(k) or dj.element("SQ")}


def progress_fingerprint(ds: dj.Dataset) -> Any:
    """What a Progress Report is about: progress, description and communications URIs."""
    progress = dj.items(ds, PROGRESS_INFO_SEQ)
    item = progress[0] if progress else {}
    return tuple(item.get(dj.key(t)) for t in (PROGRESS, PROGRESS_DESCRIPTION, COMMUNICATIONS_URI_SEQ))


def assigned(ds: dj.Dataset) -> list[dj.Dataset]:
    """UPS Assigned events: one per Scheduled Human Performers item (with that performer's
    code and organization), or one with just the station when no performer is named."""
    station = ds.get(dj.key(STATION_NAME_SEQ))
    base: dj.Dataset = {}
    if station and dj.has_value(station):
        base[dj.key(STATION_NAME_SEQ)] = station
    out = []
    for item in dj.items(ds, HUMAN_PERFORMERS_SEQ):
        info = dict(base)
        _copy(item, info, HUMAN_PERFORMER_CODE_SEQ, HUMAN_PERFORMER_ORG)
        out.append(info)
    if not out and base:
        out.append(base)
    return out


def assignment_fingerprint(ds: dj.Dataset) -> Any:
    return ds.get(dj.key(STATION_NAME_SEQ)), ds.get(dj.key(HUMAN_PERFORMERS_SEQ))


def scp_status_change(status: str, subscription_list: str = "WARM START", ups_list: str = "WARM START") -> dj.Dataset:
    info = {dj.key(0x00741242): dj.element("CS", status)}
    if status != "GOING DOWN":
        info[dj.key(0x00741244)] = dj.element("CS", subscription_list)
        info[dj.key(0x00741246)] = dj.element("CS", ups_list)
    return info


def message(uid: str, event_type: int, info: dj.Dataset, message_id: int) -> dj.Dataset:
    """The full event report as sent on a WebSocket (PS3.18 8.10.5): command attributes
    plus the event information."""
    msg: dj.Dataset = {
        "00000002": dj.element("UI", UPS_PUSH_SOP_CLASS),
        "00000100": dj.element("US", 0x0100),
        "00000110": dj.element("US", message_id & 0xFFFF),
        "00001000": dj.element("UI", uid),
        "00001002": dj.element("US", event_type),
    }
    msg.update(info)
    return dj.sorted_dataset(msg)
