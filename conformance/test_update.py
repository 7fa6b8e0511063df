"""Update Workitem (UpdateUPS, RAD-84): PS3.18 11.6, PS3.4 CC.2.6 — spec §1.3.3, §2.3, §7 #3–4, #24, #26."""

from __future__ import annotations

import time

import pytest

from . import expect, tags
from .api import UPDATE_TUID_FORMS, Ups
from .dicomjson import Dataset, code, code_values, comparable, elem, first, items, new_uid, parse_datetime, pn, sq
from .workitem import new_workitem


def _progress(percent: str, text: str) -> Dataset:
    """An Update setting Procedure Step Progress and its description (N-SET 3/1)."""
    return {tags.PROGRESS_INFORMATION_SEQ: sq({
        tags.PROGRESS: elem("DS", percent),
        tags.PROGRESS_DESCRIPTION: elem("ST", text),
    })}


def _progress_text(ds: Dataset) -> str | None:
    progress = items(ds, tags.PROGRESS_INFORMATION_SEQ)
    return first(progress[0], tags.PROGRESS_DESCRIPTION) if progress else None


# --- SCHEDULED: no Transaction UID -------------------------------------------------------------
def test_scheduled_update_readiness_without_tuid(ups: Ups) -> None:
    """A Task Requester flips Input Readiness State to READY on a SCHEDULED item without a lock."""
    uid = ups.create_ok(new_workitem(readiness="INCOMPLETE"))
    ups.update_ok(uid, {tags.INPUT_READINESS_STATE: elem("CS", "READY")})
    assert first(ups.get(uid), tags.INPUT_READINESS_STATE) == "READY"


def test_scheduled_update_priority_without_tuid(ups: Ups) -> None:
    """Priority is N-SET 3/1: changeable while SCHEDULED."""
    uid = ups.create_ok(new_workitem(priority="LOW"))
    ups.update_ok(uid, {tags.PRIORITY: elem("CS", "HIGH")})
    ds = ups.get(uid)
    assert first(ds, tags.PRIORITY) == "HIGH"
    assert first(ds, tags.PROCEDURE_STEP_STATE) == "SCHEDULED"


def test_scheduled_update_with_tuid_refused(ups: Ups, scheduled: str) -> None:
    """A Transaction UID on a SCHEDULED item is inconsistent with its state (C310) and changes nothing."""
    before = ups.get(scheduled)
    response = ups.update(scheduled, {tags.PRIORITY: elem("CS", "HIGH")}, tuid=new_uid())
    expect.refused(response, expect.CONFLICT, expect.UPDATE_REFUSED)
    assert ups.get(scheduled) == before


# --- IN PROGRESS: the lock ------------------------------------------------------------------------
@pytest.mark.parametrize("form", UPDATE_TUID_FORMS)
def test_in_progress_update_with_tuid(ups: Ups, in_progress: tuple[str, str], form: str) -> None:
    """The owner's Transaction UID is accepted in every form (query names, bare, dataset)."""
    uid, tuid = in_progress
    text = f"stage via {form}"
    expect.status(ups.update(uid, _progress("40", text), tuid=tuid, form=form), 200)
    ds = ups.get(uid)
    assert _progress_text(ds) == text
    assert not ds.get(tags.TRANSACTION_UID), "Retrieve must not return the Transaction UID"


@pytest.mark.parametrize("tuid", [None, "wrong"], ids=["missing", "incorrect"])
def test_in_progress_update_without_correct_tuid_refused(
    ups: Ups, in_progress: tuple[str, str], tuid: str | None,
) -> None:
    """Missing or wrong Transaction UID on IN PROGRESS is C301: refused, workitem unchanged."""
    uid, owner = in_progress
    ups.update_ok(uid, _progress("10", "owner"), owner)
    before = ups.get(uid)
    response = ups.update(uid, _progress("90", "intruder"), tuid=new_uid() if tuid else None)
    expect.refused(response, expect.CONFLICT, expect.UPDATE_REFUSED)
    assert ups.get(uid) == before


# --- Not allowed attributes (N-SET column) -----------------------------------------------------
NOT_ALLOWED: dict[str, Dataset] = {
    "PatientName": {tags.PATIENT_NAME: pn("CHANGED^NAME")},
    "PatientID": {tags.PATIENT_ID: elem("LO", "CHANGED-ID")},
    "PatientBirthDate": {tags.PATIENT_BIRTH_DATE: elem("DA", "20000101")},
    "ProcedureStepState": {tags.PROCEDURE_STEP_STATE: elem("CS", "COMPLETED")},
    "SOPInstanceUID": {tags.SOP_INSTANCE_UID: elem("UI", "2.25.1")},
    "SOPClassUID": {tags.SOP_CLASS_UID: elem("UI", "1.2.840.10008.5.1.4.34.6.2")},
    "ReferencedRequestSequence": {tags.REFERENCED_REQUEST_SEQ: sq({
        tags.STUDY_INSTANCE_UID: elem("UI", "2.25.2"),
        tags.ACCESSION_NUMBER: elem("SH", "CHANGED"),
        tags.ISSUER_OF_ACCESSION_NUMBER_SEQ: sq(),
        tags.REQUESTED_PROCEDURE_ID: elem("SH", "CHANGED"),
    })},
}


@pytest.mark.parametrize("attribute", sorted(NOT_ALLOWED))
def test_not_allowed_attribute_is_400(ups: Ups, scheduled: str, attribute: str) -> None:
    """N-SET 'Not allowed' attributes make the dataset non-conformant → 400, nothing changed."""
    before = ups.get(scheduled)
    change = dict(NOT_ALLOWED[attribute])
    change[tags.COMMENTS_ON_SPS] = elem("LT", "must not be applied")  # an allowed change riding along
    expect.status(ups.update(scheduled, change), 400)
    assert ups.get(scheduled) == before, "a refused Update must not change anything (atomic)"


def test_not_allowed_attribute_in_progress_is_400(ups: Ups, in_progress: tuple[str, str]) -> None:
    """The owner cannot change patient demographics either."""
    uid, tuid = in_progress
    before = ups.get(uid)
    expect.status(ups.update(uid, NOT_ALLOWED["PatientName"], tuid=tuid), 400)
    assert ups.get(uid) == before


# --- Final states ---------------------------------------------------------------------------------
@pytest.mark.parametrize("final", ["completed", "canceled"])
def test_final_state_update_refused(ups: Ups, final: str, request: pytest.FixtureRequest) -> None:
    """COMPLETED/CANCELED workitems may no longer be updated (C300), even by their owner."""
    uid, tuid = request.getfixturevalue(final)
    before = ups.get_final(uid)
    response = ups.update(uid, {tags.COMMENTS_ON_SPS: elem("LT", "too late")}, tuid=tuid)
    expect.refused(response, expect.CONFLICT, expect.UPDATE_REFUSED)
    assert ups.get_final(uid) == before


# --- Semantics ------------------------------------------------------------------------------------
def test_sequence_replaced_as_a_whole(ups: Ups) -> None:
    """A sequence in an Update replaces the stored sequence; items are not merged (CC.2.6.2)."""
    ds = new_workitem()
    ds[tags.SCHEDULED_STATION_NAME_SEQ] = sq(
        code("NODE_A", "99AIWCONF", "Node A"), code("NODE_B", "99AIWCONF", "Node B"),
    )
    uid = ups.create_ok(ds)
    assert code_values(ups.get(uid), tags.SCHEDULED_STATION_NAME_SEQ) == ["NODE_A", "NODE_B"]
    ups.update_ok(uid, {tags.SCHEDULED_STATION_NAME_SEQ: sq(code("NODE_C", "99AIWCONF", "Node C"))})
    assert code_values(ups.get(uid), tags.SCHEDULED_STATION_NAME_SEQ) == ["NODE_C"]


def test_progress_sequence_replaced_on_each_update(ups: Ups, in_progress: tuple[str, str]) -> None:
    """Repeated progress reports leave one current item, not a growing list."""
    uid, tuid = in_progress
    ups.update_ok(uid, _progress("25", "first"), tuid)
    ups.update_ok(uid, _progress("75", "second"), tuid)
    progress = items(ups.get(uid), tags.PROGRESS_INFORMATION_SEQ)
    assert len(progress) == 1 and first(progress[0], tags.PROGRESS_DESCRIPTION) == "second"


def test_update_leaves_other_attributes(ups: Ups) -> None:
    """Attributes absent from the Update keep their value."""
    sent = new_workitem(priority="LOW")
    uid = ups.create_ok(sent)
    ups.update_ok(uid, {tags.COMMENTS_ON_SPS: elem("LT", "updated comment")})
    ds = ups.get(uid)
    assert first(ds, tags.COMMENTS_ON_SPS) == "updated comment"
    assert first(ds, tags.PRIORITY) == "LOW"
    assert first(ds, tags.PROCEDURE_STEP_LABEL) == first(sent, tags.PROCEDURE_STEP_LABEL)


def test_modification_datetime_updated(ups: Ups, scheduled: str) -> None:
    """The SCP stamps Scheduled Procedure Step Modification DateTime on every Update (-/1)."""
    before = parse_datetime(first(ups.get(scheduled), tags.MODIFICATION_DATETIME))
    time.sleep(1.1)  # DT may be stamped with one-second precision
    ups.update_ok(scheduled, {tags.PRIORITY: elem("CS", "HIGH")})
    after = parse_datetime(first(ups.get(scheduled), tags.MODIFICATION_DATETIME))
    old, new = comparable(before, after)
    assert new > old, f"Modification DateTime not advanced: {before} -> {after}"


def test_update_unknown_is_404(ups: Ups) -> None:
    """Updating a workitem the server does not manage is C307 → 404."""
    expect.status(ups.update(new_uid(), {tags.PRIORITY: elem("CS", "HIGH")}), 404)
