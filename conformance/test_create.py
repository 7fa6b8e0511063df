"""Create Workitem (CreateUPS, RAD-80): PS3.18 11.4, PS3.4 CC.2.5 — spec §1.3.1, §3.3, §7 #1–2."""

from __future__ import annotations

from urllib.parse import urljoin

import httpx
import pytest

from . import expect, tags
from .api import CREATE_UID_FORMS, Ups, encode
from .dicomjson import code, dicom_datetime, elem, first, items, new_uid, parse_datetime, pn_text, sq
from .workitem import new_workitem, performed_procedure


def _assert_location(response: httpx.Response, ups: Ups, uid: str) -> None:
    """Location (2024c: shall) names {s}/workitems/{uid}; Content-Location (2016e) is checked if sent."""
    location = response.headers.get("location")
    assert location, f"201 without Location: {expect.describe(response)}"
    assert urljoin(str(response.request.url), location).rstrip("/").endswith(f"/workitems/{uid}")
    content_location = response.headers.get("content-location")
    if content_location:  # soft: only 2016e required it
        assert urljoin(str(response.request.url), content_location).rstrip("/").endswith(
            f"/workitems/{uid}"
        ), f"Content-Location {content_location!r} does not name the new workitem"


@pytest.mark.parametrize("form", CREATE_UID_FORMS)
def test_create_accepts_every_uid_form(ups: Ups, form: str) -> None:
    """Every tolerated UID carriage creates the workitem under that UID (none → server UID)."""
    uid = None if form == "none" else new_uid()
    response = ups.create(new_workitem(), uid=uid, form=form)
    expect.status(response, 201)
    created = ups.location_uid(response)
    if uid is not None:
        assert created == uid, f"{form}: workitem created as {created}, not {uid}"
    _assert_location(response, ups, created)
    assert not response.content or response.headers.get("content-type"), "a body needs a Content-Type"
    ds = ups.get(created)
    assert first(ds, tags.SOP_INSTANCE_UID) == created
    assert first(ds, tags.PROCEDURE_STEP_STATE) == "SCHEDULED"


def test_location_is_retrievable(ups: Ups) -> None:
    """GET on the Location URL returns the workitem just created."""
    uid = new_uid()
    response = ups.create(new_workitem(), uid=uid)
    expect.status(response, 201)
    retrieved = ups.client.get(
        urljoin(str(response.request.url), response.headers["location"]),
        headers={"Accept": "application/dicom+json"},
    )
    expect.status(retrieved, 200)
    assert first(expect.single_dataset(retrieved), tags.SOP_INSTANCE_UID) == uid


@pytest.mark.parametrize("as_array", [True, False], ids=["array-of-one", "bare-object"])
def test_body_as_array_or_object(ups: Ups, as_array: bool) -> None:
    """A single dataset may be sent as ``[{…}]`` or ``{…}`` (spec §1.2)."""
    uid = new_uid()
    expect.status(ups.create(new_workitem(), uid=uid, as_array=as_array), 201)
    assert first(ups.get(uid), tags.SOP_INSTANCE_UID) == uid


def test_url_and_body_uid_conflict_is_400(ups: Ups) -> None:
    """Query UID and body SOP Instance UID that differ make the request ambiguous → 400."""
    url_uid, body_uid = new_uid(), new_uid()
    ds = new_workitem()
    ds[tags.SOP_INSTANCE_UID] = elem("UI", body_uid)
    expect.status(ups.create(ds, uid=url_uid, form="workitem"), 400)
    for uid in (url_uid, body_uid):
        expect.status(ups.retrieve(uid), 404)


def test_duplicate_is_409(ups: Ups) -> None:
    """A workitem is added only once: a second Create with its UID is 0111 → 409, no change."""
    uid = ups.create_ok(new_workitem(worklist_label="FIRST"))
    before = ups.get(uid)
    expect.status(ups.create(new_workitem(worklist_label="SECOND"), uid=uid), 409)
    assert ups.get(uid) == before


def test_scp_sets_sop_class_and_modification_datetime(ups: Ups) -> None:
    """The SCP sets SOP Class UID = UPS Push and stamps Scheduled Procedure Step Modification DateTime."""
    uid = ups.create_ok(new_workitem())
    ds = ups.get(uid)
    assert first(ds, tags.SOP_CLASS_UID) == tags.UPS_PUSH_SOP_CLASS
    stamped = first(ds, tags.MODIFICATION_DATETIME)
    assert stamped, "Scheduled Procedure Step Modification DateTime (0040,4010) must be set by the SCP"
    parse_datetime(stamped)


def test_empty_worklist_label_is_filled_with_warning(ups: Ups) -> None:
    """Worklist Label is 2/1: sent empty, the SCP supplies one and says it modified the workitem."""
    uid = new_uid()
    response = ups.create(new_workitem(worklist_label=None), uid=uid)
    expect.status(response, 201)
    expect.warning(response, expect.CREATED_WITH_MODIFICATIONS)
    assert first(ups.get(uid), tags.WORKLIST_LABEL), "the SCP must fill an empty Worklist Label"


def test_created_state_and_empty_sequences(ups: Ups) -> None:
    """Created SCHEDULED, sent attributes kept, Progress/Performed sequences empty, no Transaction UID."""
    ds = new_workitem(patient_name="ROUNDTRIP^CHECK", priority="LOW")
    uid = ups.create_ok(ds)
    stored = ups.get(uid)
    assert first(stored, tags.PROCEDURE_STEP_STATE) == "SCHEDULED"
    assert first(stored, tags.PRIORITY) == "LOW"
    assert first(stored, tags.PATIENT_ID) == first(ds, tags.PATIENT_ID)
    assert pn_text(stored, tags.PATIENT_NAME) == "ROUNDTRIP^CHECK"
    assert first(items(stored, tags.REFERENCED_REQUEST_SEQ)[0], tags.ACCESSION_NUMBER) == (
        first(items(ds, tags.REFERENCED_REQUEST_SEQ)[0], tags.ACCESSION_NUMBER)
    )
    retrieve_url = first(
        items(items(stored, tags.INPUT_INFORMATION_SEQ)[0], tags.WADO_RS_RETRIEVAL_SEQ)[0], tags.RETRIEVE_URL
    )
    assert retrieve_url and retrieve_url.startswith("https://pacs.example.org/dicom-web/studies/")
    assert items(stored, tags.PROGRESS_INFORMATION_SEQ) == []
    assert items(stored, tags.PERFORMED_PROCEDURE_SEQ) == []
    assert tags.TRANSACTION_UID not in stored


@pytest.mark.parametrize("state", ["IN PROGRESS", "COMPLETED", "CANCELED"])
def test_state_other_than_scheduled_is_400(ups: Ups, state: str) -> None:
    """Procedure Step State must be SCHEDULED at creation (C309 → 400)."""
    uid = new_uid()
    ds = new_workitem()
    ds[tags.PROCEDURE_STEP_STATE] = elem("CS", state)
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


def test_non_empty_transaction_uid_is_400(ups: Ups) -> None:
    """Transaction UID is 2/2 and must be empty at creation: a lock cannot be created with the item."""
    uid = new_uid()
    ds = new_workitem()
    ds[tags.TRANSACTION_UID] = elem("UI", new_uid())
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


@pytest.mark.parametrize(
    "tag",
    [tags.PRIORITY, tags.INPUT_READINESS_STATE, tags.PROCEDURE_STEP_LABEL, tags.START_DATETIME,
     tags.PROCEDURE_STEP_STATE],
    ids=["ScheduledProcedureStepPriority", "InputReadinessState", "ProcedureStepLabel",
         "ScheduledProcedureStepStartDateTime", "ProcedureStepState"],
)
@pytest.mark.parametrize("how", ["absent", "empty"])
def test_missing_type1_is_400(ups: Ups, tag: str, how: str) -> None:
    """N-CREATE type 1 attributes must be present with a value (0120/0121 → 400)."""
    uid = new_uid()
    ds = new_workitem()
    if how == "absent":
        del ds[tag]
    else:
        ds[tag] = {"vr": ds[tag]["vr"]}
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


@pytest.mark.parametrize(
    ("tag", "value"),
    [(tags.PRIORITY, "URGENT"), (tags.INPUT_READINESS_STATE, "DONE"), (tags.PROCEDURE_STEP_STATE, "STARTED")],
    ids=["priority-URGENT", "readiness-DONE", "state-STARTED"],
)
def test_wrong_enumerated_value_is_400(ups: Ups, tag: str, value: str) -> None:
    """Enumerated values of PS3.3 C.30 (spec §3.4) are enforced (0106 invalid value → 400)."""
    uid = new_uid()
    ds = new_workitem()
    ds[tag] = elem("CS", value)
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


def test_performed_procedure_items_not_allowed_at_create(ups: Ups) -> None:
    """The Performed Procedure Sequence is created empty; its items are 'Not allowed' at N-CREATE."""
    uid = new_uid()
    ds = new_workitem()
    ds.update(performed_procedure())
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


def test_progress_items_not_allowed_at_create(ups: Ups) -> None:
    """The Progress Information Sequence is created empty; cancellation items cannot be pre-set."""
    uid = new_uid()
    ds = new_workitem()
    ds[tags.PROGRESS_INFORMATION_SEQ] = sq({
        tags.CANCELLATION_DATETIME: elem("DT", dicom_datetime()),
        tags.DISCONTINUATION_REASON_CODE_SEQ: sq(code("110513", "DCM", "Discontinued for unspecified reason")),
    })
    expect.status(ups.create(ds, uid=uid), 400)
    expect.status(ups.retrieve(uid), 404)


def test_non_ascii_values_round_trip(ups: Ups, label: str) -> None:
    """DICOM JSON is UTF-8 (F.2): a Cyrillic/CJK patient name with Specific Character Set ISO_IR 192
    is stored, retrieved and matched unchanged."""
    name = "Иванов^Иван=山田^太郎"
    ds = new_workitem(worklist_label=label, patient_name=name)
    ds[tags.SPECIFIC_CHARACTER_SET] = elem("CS", "ISO_IR 192")
    uid = ups.create_ok(ds)
    assert pn_text(ups.get(uid), tags.PATIENT_NAME) == name
    found = ups.search_uids(f"WorklistLabel={encode(label)}&PatientName={encode(name)}")
    assert found == [uid]
