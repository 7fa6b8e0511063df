"""Bad input on every transaction: precise 4xx, never a 5xx (PS3.18 8.5, spec §1.3, §1.2).

Includes a small property-based fuzz (hypothesis) of Create bodies and Search values:
whatever arrives, the server must answer with a client error or success — a 5xx is a bug.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import expect, tags
from .api import Ups, encode
from .dicomjson import elem, new_uid, sq
from .workitem import new_workitem

# derandomize: the same server gets the same verdict on every run (a conformance report must be
# reproducible); the deterministic non-ASCII tests above pin the cases fuzzing found first.
FUZZ = settings(
    max_examples=60, deadline=None, database=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --- Malformed bodies ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content",
    [b"{", b"not json at all", b"[{}, {}", b'{"00741000": {"vr": "CS", "Value": "SCHEDULED"}}', b"42",
     b'[{"00741000": {"Value": ["SCHEDULED"]}}]', b"\xff\xfe\x00garbage"],
    ids=["truncated", "text", "unterminated-array", "value-not-array", "scalar", "no-vr", "binary"],
)
def test_create_malformed_json_is_400(ups: Ups, content: bytes) -> None:
    """A body that is not a DICOM JSON dataset is a bad request."""
    expect.status(ups.send("POST", ups.url(f"?workitem={new_uid()}"), content), 400)


def test_create_two_datasets_is_400(ups: Ups) -> None:
    """Create takes exactly one dataset; an array of two is not a workitem."""
    uid = new_uid()
    body = ups.body([new_workitem(), new_workitem()])
    expect.status(ups.send("POST", ups.url(f"?workitem={uid}"), body), 400)
    expect.status(ups.retrieve(uid), 404)


def test_update_malformed_json_is_400(ups: Ups, scheduled: str) -> None:
    """Update with a broken body changes nothing."""
    before = ups.get(scheduled)
    expect.status(ups.send("POST", ups.url(f"/{scheduled}"), b'[{"00741200": '), 400)
    assert ups.get(scheduled) == before


@pytest.mark.parametrize(
    ("tag", "attribute"),
    [(tags.PATIENT_BIRTH_DATE, {"vr": "SQ", "Value": ["19700101"]}),
     (tags.PRIORITY, {"vr": "PN", "Value": [{"Alphabetic": "HIGH"}]}),
     (tags.SCHEDULED_WORKITEM_CODE_SEQ, {"vr": "LO", "Value": ["110004"]})],
    ids=["DA-sent-as-SQ", "CS-sent-as-PN", "SQ-sent-as-LO"],
)
def test_wrong_vr_is_400(ups: Ups, tag: str, attribute: dict) -> None:
    """A known tag with another VR (F.2.3: vr is that of the data dictionary) is rejected."""
    uid = new_uid()
    ds = new_workitem()
    ds[tag] = attribute
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


# --- Non-ASCII in invalid values (the diagnostic must not break the response) -----------------------
def test_create_non_ascii_state_is_400(ups: Ups) -> None:
    """An invalid, non-ASCII Procedure Step State is C309 → 400 (whatever the error text holds)."""
    uid = new_uid()
    ds = new_workitem()
    ds[tags.PROCEDURE_STEP_STATE] = elem("CS", "ЗАПЛАНИРОВАНО")
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


def test_change_state_non_ascii_state_is_400(ups: Ups, scheduled: str) -> None:
    """An invalid, non-ASCII target state is a malformed Change State payload → 400."""
    body = ups.body([{tags.PROCEDURE_STEP_STATE: elem("CS", "ВЫПОЛНЕНО"), tags.TRANSACTION_UID: elem("UI", new_uid())}])
    expect.status(ups.send("PUT", ups.url(f"/{scheduled}/state"), body), 400)
    assert ups.state_of(scheduled) == "SCHEDULED"


@pytest.mark.parametrize(
    "term", ["ScheduledProcedureStepStartDateTime=%C4%80", "PatientBirthDate=%E2%80%94-19700101"],
    ids=["DT", "DA-range"],
)
def test_search_non_ascii_invalid_value_is_400(ups: Ups, term: str) -> None:
    """A non-ASCII value that is no DT/DA (or range of them) is invalid query syntax → 400."""
    expect.status(ups.search(f"WorklistLabel=AIWCONF-NONE&{term}"), 400)


# --- UID syntax ------------------------------------------------------------------------------------------
BAD_UIDS = ["not-a-uid", "1..2", "1.2.abc", "1.2." + "3" * 70, ".1.2"]
BAD_UID_IDS = ["letters", "empty-component", "alpha-component", "too-long", "leading-dot"]


@pytest.mark.parametrize("uid", BAD_UIDS, ids=BAD_UID_IDS)
def test_create_invalid_uid_is_400(ups: Ups, uid: str) -> None:
    """A workitem UID that violates PS3.5 9.1 (digits and dots, ≤ 64 chars) is refused."""
    expect.status(ups.create(new_workitem(), uid=uid, form="workitem"), 400)


@pytest.mark.parametrize("uid", BAD_UIDS[:3], ids=BAD_UID_IDS[:3])
def test_create_invalid_uid_in_body_is_400(ups: Ups, uid: str) -> None:
    """The same rule applies to SOP Instance UID in the dataset."""
    expect.status(ups.create(new_workitem(), uid=uid, form="body"), 400)


def test_invalid_uid_in_dataset_is_400(ups: Ups) -> None:
    """A UI attribute of the workitem with an invalid UID (Study Instance UID) is an invalid value."""
    uid = new_uid()
    ds = new_workitem()
    ds[tags.STUDY_INSTANCE_UID] = elem("UI", "1.2.abc")
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


@pytest.mark.parametrize("uid", ["not-a-uid", "1..2"])
def test_retrieve_invalid_uid(ups: Ups, uid: str) -> None:
    """Retrieving an invalid UID is a bad request or simply not found — never a server error."""
    expect.status(ups.retrieve(uid), 400, 404)


# --- Media types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("media_type", ["text/plain", "application/x-www-form-urlencoded", "image/png"])
def test_create_unsupported_content_type_is_415(ups: Ups, media_type: str) -> None:
    """A payload in a media type the server does not support is 415 (PS3.18 8.5)."""
    uid = new_uid()
    response = ups.send("POST", ups.url(f"?workitem={uid}"), ups.body([new_workitem()]), content_type=media_type)
    expect.status(response, 415)
    expect.status(ups.retrieve(uid), 404)


def test_update_unsupported_content_type_is_415(ups: Ups, scheduled: str) -> None:
    """The same on Update, with nothing changed."""
    before = ups.get(scheduled)
    body = ups.body([{tags.PRIORITY: elem("CS", "HIGH")}])
    expect.status(ups.send("POST", ups.url(f"/{scheduled}"), body, content_type="text/plain"), 415)
    assert ups.get(scheduled) == before


def test_change_state_unsupported_content_type_is_415(ups: Ups, scheduled: str) -> None:
    """The same on Change State, with the workitem still SCHEDULED."""
    body = ups.body([{tags.PROCEDURE_STEP_STATE: elem("CS", "IN PROGRESS"),
                      tags.TRANSACTION_UID: elem("UI", new_uid())}])
    expect.status(ups.send("PUT", ups.url(f"/{scheduled}/state"), body, content_type="text/plain"), 415)
    assert ups.state_of(scheduled) == "SCHEDULED"


def test_retrieve_unacceptable_media_type_is_406(ups: Ups, scheduled: str) -> None:
    """Accept naming only a media type the server cannot produce is 406 (PS3.18 8.5)."""
    response = ups.client.get(ups.url(f"/{scheduled}"), headers={"Accept": "application/pdf"})
    expect.status(response, 406)


# --- Unknown workitem on every transaction ------------------------------------------------------------
def test_unknown_workitem_is_404_everywhere(ups: Ups) -> None:
    """C307 'no such UPS' → 404 on Retrieve, Update, Change State and Request Cancellation."""
    uid = new_uid()
    expect.status(ups.retrieve(uid), 404)
    expect.status(ups.update(uid, {tags.PRIORITY: elem("CS", "HIGH")}), 404)
    expect.status(ups.change_state(uid, "IN PROGRESS", new_uid()), 404)
    expect.status(ups.request_cancel(uid), 404)


# --- Size --------------------------------------------------------------------------------------------------
def test_oversized_body_is_413(ups: Ups) -> None:
    """A 20 MB Create body (a valid workitem listing ~150k input instances) is 413, not processed."""
    ds = new_workitem()
    instances = [
        {tags.REFERENCED_SOP_CLASS_UID: elem("UI", tags.CT_IMAGE_STORAGE),
         tags.REFERENCED_SOP_INSTANCE_UID: elem("UI", new_uid())}
        for _ in range(150_000)
    ]
    ds[tags.INPUT_INFORMATION_SEQ]["Value"][0][tags.REFERENCED_SOP_SEQ] = sq(*instances)
    body = ups.body([ds])
    assert len(body) > 20_000_000, len(body)
    uid = new_uid()
    try:
        response = ups.send("POST", ups.url(f"?workitem={uid}"), body)
    except httpx.TransportError as exc:  # a server may close the connection mid-upload
        pytest.fail(f"server dropped the connection instead of answering 413: {exc!r}")
    expect.status(response, 413)
    expect.status(ups.retrieve(uid), 404)


# --- Never a 5xx -------------------------------------------------------------------------------------------
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_attribute = st.fixed_dictionaries(
    {"vr": st.sampled_from(["CS", "LO", "SQ", "UI", "DT", "PN", "DA", "XX", ""])},
    optional={"Value": _json_values},
)
_tag = st.sampled_from([tags.PROCEDURE_STEP_STATE, tags.PRIORITY, tags.SCHEDULED_WORKITEM_CODE_SEQ,
                        tags.PATIENT_NAME, tags.START_DATETIME, tags.TRANSACTION_UID, "ZZZZZZZZ", "0008"])


@FUZZ
@given(mutation=st.dictionaries(_tag, _attribute, min_size=1, max_size=3))
def test_fuzzed_create_never_5xx(ups: Ups, mutation: dict) -> None:
    """Any mangling of a valid workitem gets a 2xx or 4xx answer."""
    ds = new_workitem()
    ds.update(mutation)
    expect.no_server_error(ups.create(ds, uid=new_uid()))


@FUZZ
@given(body=_json_values)
def test_fuzzed_change_state_never_5xx(ups: Ups, scheduled: str, body: object) -> None:
    """Arbitrary JSON as a Change State payload is a client error at worst."""
    expect.no_server_error(ups.send("PUT", ups.url(f"/{scheduled}/state"), json.dumps(body).encode()))


@FUZZ
@given(key=st.sampled_from(["PatientName", "ScheduledProcedureStepStartDateTime", "SOPInstanceUID",
                            "ScheduledWorkitemCodeSequence.CodeValue", "00741000", "limit", "offset",
                            "includefield", "fuzzymatching", "PatientBirthDate", "0040A370.00080050"]),
       value=st.text(max_size=30))
def test_fuzzed_search_never_5xx(ups: Ups, key: str, value: str) -> None:
    """Arbitrary values for real matching keys and parameters never crash Search."""
    expect.no_server_error(ups.search(f"WorklistLabel=AIWCONF-FUZZ&{key}={encode(value)}"))
