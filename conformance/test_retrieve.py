"""Retrieve Workitem (RetrieveUPS, RAD-83): PS3.18 11.5, PS3.4 CC.2.7 — spec §1.3.2, §2.3, §7 #14–15."""

from __future__ import annotations


import pytest

from . import expect, tags
from .api import Ups
from .dicomjson import contains_tag, first, items, new_uid, pn_text
from .workitem import new_workitem

def test_retrieve_returns_the_workitem(ups: Ups) -> None:
    """200 with an application/dicom+json dataset that is the stored workitem."""
    sent = new_workitem(patient_name="RETRIEVE^ME", priority="HIGH")
    uid = ups.create_ok(sent)
    response = ups.retrieve(uid)
    expect.status(response, 200)
    expect.dicom_json_media_type(response)
    ds = expect.single_dataset(response)
    expect.well_formed(ds)
    assert first(ds, tags.SOP_INSTANCE_UID) == uid
    assert first(ds, tags.SOP_CLASS_UID) == tags.UPS_PUSH_SOP_CLASS
    assert first(ds, tags.PRIORITY) == "HIGH"
    assert pn_text(ds, tags.PATIENT_NAME) == "RETRIEVE^ME"
    for tag in (tags.PATIENT_ID, tags.PROCEDURE_STEP_LABEL, tags.WORKLIST_LABEL, tags.INPUT_READINESS_STATE,
                tags.STUDY_INSTANCE_UID, tags.ADMISSION_ID, tags.PATIENT_BIRTH_DATE, tags.PATIENT_SEX):
        assert first(ds, tag) == first(sent, tag), f"({tag[:4]},{tag[4:]}) was not stored as sent"
    sent_code = items(sent, tags.SCHEDULED_WORKITEM_CODE_SEQ)[0]
    stored_code = items(ds, tags.SCHEDULED_WORKITEM_CODE_SEQ)[0]
    for tag in (tags.CODE_VALUE, tags.CODING_SCHEME_DESIGNATOR, tags.CODE_MEANING):
        assert first(stored_code, tag) == first(sent_code, tag)


def test_retrieve_unknown_is_404(ups: Ups) -> None:
    """A UID the server never saw is C307 → 404."""
    expect.status(ups.retrieve(new_uid()), 404)


@pytest.mark.parametrize("state", ["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED", "CANCELED-by-request"])
def test_transaction_uid_never_returned(ups: Ups, state: str) -> None:
    """The Transaction UID is the lock secret: N-GET 'Not allowed', in every state (§2.3 rule 1)."""
    uid = ups.create_ok(new_workitem())
    tuid = None
    if state == "CANCELED-by-request":
        expect.status(ups.request_cancel(uid), 202)
    elif state != "SCHEDULED":
        tuid = ups.claim(uid)
        if state == "COMPLETED":
            ups.complete(uid, tuid)
        elif state == "CANCELED":
            ups.cancel(uid, tuid)
    response = ups.retrieve(uid)
    if state.startswith(("COMPLETED", "CANCELED")) and response.status_code in (404, 410):
        pytest.skip("server purged the final-state workitem (allowed without a deletion lock, spec §4.4)")
    expect.status(response, 200)
    ds = expect.single_dataset(response)
    assert first(ds, tags.PROCEDURE_STEP_STATE) == state.split("-")[0]
    assert not contains_tag(ds, tags.TRANSACTION_UID), "Retrieve returned Transaction UID (0008,1195)"
    if tuid:
        assert tuid not in response.text, "Retrieve leaked the Transaction UID value"
