"""Change Workitem State (ChangeUPSState, RAD-82/85): PS3.18 11.7, PS3.4 Table CC.1.1-2.

Every row of the transition table of spec §2.2. Lock and state conflicts accept 400 or 409
(editions disagree, §7 #4) but their Warning texts are those of PS3.18 11.7.3.2, which
all editions share for Change State.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from . import checks, expect, tags
from .api import Ups
from .dicomjson import elem, first, items, new_uid
from .workitem import cancellation_reason, new_workitem, performed_procedure

STATES = ("SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED")


def _workitem_in(ups: Ups, state: str) -> tuple[str, str | None]:
    """A fresh workitem driven to ``state`` by this test: (UID, Transaction UID or None)."""
    uid = ups.create_ok(new_workitem())
    if state == "SCHEDULED":
        return uid, None
    tuid = ups.claim(uid)
    if state == "COMPLETED":
        ups.complete(uid, tuid)
    elif state == "CANCELED":
        ups.cancel(uid, tuid)
    return uid, tuid


def _state_unchanged(ups: Ups, uid: str, state: str) -> None:
    """After a refusal the workitem is still in ``state`` (skipped only if a final item was purged)."""
    ds = ups.get_final(uid) if state in ("COMPLETED", "CANCELED") else ups.get(uid)
    assert first(ds, tags.PROCEDURE_STEP_STATE) == state


# --- SCHEDULED row -----------------------------------------------------------------------------------
def test_claim_scheduled(ups: Ups, scheduled: str) -> None:
    """SCHEDULED → IN PROGRESS with a new Transaction UID: 200, no payload required, state changed."""
    tuid = new_uid()
    response = ups.change_state(scheduled, "IN PROGRESS", tuid)
    expect.status(response, 200)
    ds = ups.get(scheduled)
    assert first(ds, tags.PROCEDURE_STEP_STATE) == "IN PROGRESS"
    assert tuid not in ups.retrieve(scheduled).text


def test_claim_without_tuid_is_c301_missing(ups: Ups, scheduled: str) -> None:
    """A claim without Transaction UID: C301 with 'The Transaction UID is missing.'"""
    expect.refused(ups.change_state(scheduled, "IN PROGRESS", None), expect.CONFLICT, expect.TUID_MISSING)
    _state_unchanged(ups, scheduled, "SCHEDULED")


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED"])
def test_scheduled_to_final_is_c310(ups: Ups, scheduled: str, target: str) -> None:
    """SCHEDULED cannot go straight to a final state (C310, not yet IN PROGRESS)."""
    response = ups.change_state(scheduled, target, new_uid())
    expect.refused(response, expect.CONFLICT, expect.INCONSISTENT_STATE)
    _state_unchanged(ups, scheduled, "SCHEDULED")


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED"])
def test_scheduled_to_final_without_tuid_is_c301(ups: Ups, scheduled: str, target: str) -> None:
    """No Transaction UID at all is C301 (missing) whatever the target state."""
    expect.refused(ups.change_state(scheduled, target, None), expect.CONFLICT, expect.TUID_MISSING)
    _state_unchanged(ups, scheduled, "SCHEDULED")


@pytest.mark.parametrize("state", STATES)
def test_to_scheduled_is_c303(ups: Ups, state: str) -> None:
    """Nothing can return to SCHEDULED through Change State (C303)."""
    uid, tuid = _workitem_in(ups, state)
    response = ups.change_state(uid, "SCHEDULED", tuid or new_uid())
    expect.status(response, *expect.CONFLICT)
    expect.optional_warning(response, expect.INCONSISTENT_STATE, about="inconsistent")
    _state_unchanged(ups, uid, state)


# --- IN PROGRESS row ---------------------------------------------------------------------------------
def test_claim_in_progress_same_tuid_is_c302(ups: Ups, in_progress: tuple[str, str]) -> None:
    """Claiming again with the owner's Transaction UID: C302 (already IN PROGRESS)."""
    uid, tuid = in_progress
    expect.refused(ups.change_state(uid, "IN PROGRESS", tuid), expect.CONFLICT, expect.INCONSISTENT_STATE)
    _state_unchanged(ups, uid, "IN PROGRESS")


def test_second_claimer_refused(ups: Ups, in_progress: tuple[str, str]) -> None:
    """A second performer's claim fails (C301 incorrect or C302) and the owner keeps the lock."""
    uid, owner = in_progress
    response = ups.change_state(uid, "IN PROGRESS", new_uid())
    expect.refused(response, expect.CONFLICT, {expect.TUID_INCORRECT, *expect.INCONSISTENT_STATE})
    ups.update_ok(uid, {tags.COMMENTS_ON_SPS: elem("LT", "owner still holds the lock")}, owner)
    _state_unchanged(ups, uid, "IN PROGRESS")


def test_claim_in_progress_without_tuid_is_c301(ups: Ups, in_progress: tuple[str, str]) -> None:
    """A claim without Transaction UID on a claimed item: C301 missing."""
    uid, _ = in_progress
    expect.refused(ups.change_state(uid, "IN PROGRESS", None), expect.CONFLICT, expect.TUID_MISSING)


def test_concurrent_claims_one_winner(ups: Ups, scheduled: str) -> None:
    """Performers racing for one workitem: exactly one claim succeeds, the others get 400/409."""
    tuids = [new_uid() for _ in range(8)]
    with ThreadPoolExecutor(max_workers=len(tuids)) as pool:
        responses = list(pool.map(lambda tuid: ups.change_state(scheduled, "IN PROGRESS", tuid), tuids))
    winners = [tuid for tuid, response in zip(tuids, responses, strict=True) if response.status_code == 200]
    assert len(winners) == 1, f"{len(winners)} claims succeeded: {[r.status_code for r in responses]}"
    for response in responses:
        if response.status_code != 200:
            expect.refused(response, expect.CONFLICT, {expect.TUID_INCORRECT, *expect.INCONSISTENT_STATE})
    ups.update_ok(scheduled, {tags.COMMENTS_ON_SPS: elem("LT", "the winner holds the lock")}, winners[0])


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED"])
def test_final_with_wrong_tuid_is_c301_incorrect(ups: Ups, in_progress: tuple[str, str], target: str) -> None:
    """Only the lock holder may finish the workitem: wrong TUID → 'The Transaction UID is incorrect.'"""
    uid, tuid = in_progress
    ups.update_ok(uid, performed_procedure() | cancellation_reason(), tuid)
    expect.refused(ups.change_state(uid, target, new_uid()), expect.CONFLICT, expect.TUID_INCORRECT)
    _state_unchanged(ups, uid, "IN PROGRESS")


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED"])
def test_final_without_tuid_is_c301_missing(ups: Ups, in_progress: tuple[str, str], target: str) -> None:
    """No Transaction UID → 'The Transaction UID is missing.'"""
    uid, tuid = in_progress
    ups.update_ok(uid, performed_procedure() | cancellation_reason(), tuid)
    expect.refused(ups.change_state(uid, target, None), expect.CONFLICT, expect.TUID_MISSING)
    _state_unchanged(ups, uid, "IN PROGRESS")


def test_complete(ups: Ups, in_progress: tuple[str, str]) -> None:
    """IN PROGRESS → COMPLETED once the Performed Procedure Sequence is filled: 200."""
    uid, tuid = in_progress
    ups.update_ok(uid, performed_procedure(), tuid)
    expect.status(ups.change_state(uid, "COMPLETED", tuid), 200)
    ds = ups.get_final(uid)
    assert first(ds, tags.PROCEDURE_STEP_STATE) == "COMPLETED"
    performed = items(ds, tags.PERFORMED_PROCEDURE_SEQ)
    assert performed and first(performed[0], tags.PERFORMED_END_DATETIME)


@pytest.mark.parametrize(
    "omit",
    [None, tags.PERFORMED_START_DATETIME, tags.PERFORMED_END_DATETIME, tags.PERFORMED_STATION_NAME_SEQ,
     tags.PERFORMED_WORKITEM_CODE_SEQ],
    ids=["no-performed-sequence", "no-start", "no-end", "no-station", "no-workitem-code"],
)
def test_complete_without_final_state_requirements_is_c304(
    ups: Ups, in_progress: tuple[str, str], omit: str | None,
) -> None:
    """COMPLETED needs the 'P' attributes of the Performed Procedure Sequence (§3.2) — else C304."""
    uid, tuid = in_progress
    if omit is not None:
        ups.update_ok(uid, performed_procedure(omit=omit), tuid)
    expect.refused(ups.change_state(uid, "COMPLETED", tuid), expect.CONFLICT, expect.INCONSISTENT_STATE)
    _state_unchanged(ups, uid, "IN PROGRESS")
    ups.complete(uid, tuid)  # and once they are there, it completes


def test_cancel_with_reason(ups: Ups, in_progress: tuple[str, str]) -> None:
    """IN PROGRESS → CANCELED after the performer gave a reason; the SCP stamps the datetime."""
    uid, tuid = in_progress
    ups.update_ok(uid, cancellation_reason("model failed"), tuid)
    expect.status(ups.change_state(uid, "CANCELED", tuid), 200)
    checks.canceled_with_reason(ups.get_final(uid))
    progress = items(ups.get_final(uid), tags.PROGRESS_INFORMATION_SEQ)
    assert "model failed" in [first(item, tags.REASON_FOR_CANCELLATION) for item in progress]


def test_cancel_without_update(ups: Ups, in_progress: tuple[str, str]) -> None:
    """Cancel with no prior Update: the SCP fills datetime and reason (200), or refuses C304.

    A refusal is only acceptable while the discontinuation reason is missing; once the
    performer supplies it, CANCELED must succeed with the datetime filled by the SCP.
    """
    uid, tuid = in_progress
    response = ups.change_state(uid, "CANCELED", tuid)
    if response.status_code != 200:
        expect.refused(response, expect.CONFLICT, expect.INCONSISTENT_STATE)
        _state_unchanged(ups, uid, "IN PROGRESS")
        ups.update_ok(uid, cancellation_reason(), tuid)
        expect.status(ups.change_state(uid, "CANCELED", tuid), 200)
    checks.canceled_with_reason(ups.get_final(uid))


# --- COMPLETED / CANCELED rows ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("final", "already"),
    [("COMPLETED", expect.ALREADY_COMPLETED), ("CANCELED", expect.ALREADY_CANCELED)],
    ids=["COMPLETED", "CANCELED"],
)
def test_already_in_requested_state_with_correct_tuid(ups: Ups, final: str, already: str) -> None:
    """Repeating the final state with the owner's TUID: 200 + B306/B304 Warning (lock kept after final)."""
    uid, tuid = _workitem_in(ups, final)
    response = ups.change_state(uid, final, tuid)
    expect.status(response, 200)
    expect.warning(response, already)


@pytest.mark.parametrize(
    ("final", "already"),
    [("COMPLETED", expect.ALREADY_COMPLETED), ("CANCELED", expect.ALREADY_CANCELED)],
    ids=["COMPLETED", "CANCELED"],
)
@pytest.mark.parametrize("tuid_kind", ["incorrect", "missing"])
def test_already_in_requested_state_without_correct_tuid_is_c301(
    ups: Ups, final: str, already: str, tuid_kind: str,
) -> None:
    """B304/B306 apply only with the correct TUID; otherwise the table says C301."""
    uid, _ = _workitem_in(ups, final)
    response = ups.change_state(uid, final, new_uid() if tuid_kind == "incorrect" else None)
    text = expect.TUID_INCORRECT if tuid_kind == "incorrect" else expect.TUID_MISSING
    expect.refused(response, expect.CONFLICT, text)
    expect.no_warning(response, already)


@pytest.mark.parametrize(
    ("final", "target"),
    [("COMPLETED", "IN PROGRESS"), ("COMPLETED", "CANCELED"), ("CANCELED", "IN PROGRESS"),
     ("CANCELED", "COMPLETED")],
)
def test_leaving_final_state_is_c300(ups: Ups, final: str, target: str) -> None:
    """A final workitem may no longer change (C300), even for its owner."""
    uid, tuid = _workitem_in(ups, final)
    expect.refused(ups.change_state(uid, target, tuid), expect.CONFLICT, expect.INCONSISTENT_STATE)
    _state_unchanged(ups, uid, final)


@pytest.mark.parametrize(
    ("final", "target"),
    [("COMPLETED", "IN PROGRESS"), ("COMPLETED", "CANCELED"), ("CANCELED", "IN PROGRESS"),
     ("CANCELED", "COMPLETED")],
)
def test_final_state_with_wrong_tuid_is_c301(ups: Ups, final: str, target: str) -> None:
    """A stranger's Transaction UID on a final workitem is C301 'incorrect' (Table CC.1.1-2)."""
    uid, _ = _workitem_in(ups, final)
    expect.refused(ups.change_state(uid, target, new_uid()), expect.CONFLICT, expect.TUID_INCORRECT)
    _state_unchanged(ups, uid, final)


# --- null column -------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["IN PROGRESS", "COMPLETED", "CANCELED"])
def test_unknown_workitem_is_404(ups: Ups, target: str) -> None:
    """No such instance: C307 → 404."""
    expect.status(ups.change_state(new_uid(), target, new_uid()), 404)


# --- malformed payloads ------------------------------------------------------------------------------
def _put_state(ups: Ups, uid: str, content: bytes) -> httpx.Response:
    return ups.send("PUT", ups.url(f"/{uid}/state"), content)


def test_payload_without_state_is_400(ups: Ups, scheduled: str) -> None:
    """Procedure Step State is 1/1 in the Change State dataset."""
    body = ups.body([{tags.TRANSACTION_UID: elem("UI", new_uid())}])
    expect.status(_put_state(ups, scheduled, body), 400)
    _state_unchanged(ups, scheduled, "SCHEDULED")


@pytest.mark.parametrize("value", ["DONE", "in progress", "INPROGRESS", ""])
def test_payload_with_bad_state_is_400(ups: Ups, scheduled: str, value: str) -> None:
    """Only the enumerated states (§3.4) are meaningful; anything else is a bad request."""
    ds = {tags.TRANSACTION_UID: elem("UI", new_uid()), tags.PROCEDURE_STEP_STATE: elem("CS", value) if value
          else elem("CS")}
    expect.status(_put_state(ups, scheduled, ups.body([ds])), 400)
    _state_unchanged(ups, scheduled, "SCHEDULED")


def test_payload_missing_is_400(ups: Ups, scheduled: str) -> None:
    """The Change State payload is required (11.7.1.4), an empty body is a bad request."""
    expect.status(_put_state(ups, scheduled, b""), 400)
    _state_unchanged(ups, scheduled, "SCHEDULED")


def test_payload_not_json_is_400(ups: Ups, scheduled: str) -> None:
    """A body that is not DICOM JSON is a bad request."""
    expect.status(_put_state(ups, scheduled, b'{"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]'), 400)
    _state_unchanged(ups, scheduled, "SCHEDULED")
