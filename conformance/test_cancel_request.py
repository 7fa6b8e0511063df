"""Request Cancellation (RequestUPSCancellation, RAD-88): PS3.18 11.8, PS3.4 CC.2.2.3.

Spec §1.3.5 and §7 #5–7: a SCHEDULED workitem is canceled by the SCP itself (PS3.4; fixed
in PS3.18 2026a), an IN PROGRESS one only gets a Cancel Requested event — which needs
someone to tell, so 409 "The performer cannot be contacted." is also sanctioned there.
"""

from __future__ import annotations

import pytest

from . import checks, expect, tags
from .api import Ups
from .dicomjson import Dataset, code, elem, first, new_uid, sq

REQUESTER_AE = "AIWCONF_REQ"


def _reason() -> Dataset:
    """The optional Request Cancellation dataset (Table CC.2.2-2 attributes, all SCP 1)."""
    return {
        tags.REASON_FOR_CANCELLATION: elem("LT", "Wrong study selected"),
        tags.DISCONTINUATION_REASON_CODE_SEQ: sq(code("110514", "DCM", "Incorrect worklist entry selected")),
        tags.CONTACT_URI: elem("UR", "mailto:radiology@example.org"),
        tags.CONTACT_DISPLAY_NAME: elem("LO", "Radiology desk"),
    }


@pytest.mark.parametrize("with_body", [False, True], ids=["no-body", "reason-body"])
def test_scheduled_is_canceled(ups: Ups, scheduled: str, with_body: bool) -> None:
    """SCHEDULED: 202 and the SCP takes it to CANCELED meeting the final-state requirements."""
    response = ups.request_cancel(scheduled, _reason() if with_body else None)
    expect.status(response, 202)
    checks.canceled_with_reason(ups.get_final(scheduled))


@pytest.mark.parametrize(
    ("suffix", "query"),
    [(f"/{REQUESTER_AE}", ""), ("", f"requester={REQUESTER_AE}")],
    ids=["aet-path-suffix", "requester-param"],
)
def test_requester_forms_accepted(ups: Ups, scheduled: str, suffix: str, query: str) -> None:
    """The non-standard requester AE forms of dcm4chee (§7 #7) are accepted, never required."""
    expect.status(ups.request_cancel(scheduled, suffix=suffix, query=query), 202)
    assert first(ups.get_final(scheduled), tags.PROCEDURE_STEP_STATE) == "CANCELED"


def test_in_progress_request_leaves_state(ups: Ups, in_progress: tuple[str, str]) -> None:
    """IN PROGRESS: 202 (Cancel Requested event sent, state unchanged) or 409 when nobody can be told."""
    uid, tuid = in_progress
    response = ups.request_cancel(uid, _reason())
    if response.status_code == 409:
        expect.warning(response, {expect.PERFORMER_NOT_CONTACTED, expect.PERFORMER_REFUSES})
    else:
        expect.status(response, 202)
    assert ups.state_of(uid) == "IN PROGRESS", "a cancel request must not change an IN PROGRESS workitem"
    ups.update_ok(uid, {tags.COMMENTS_ON_SPS: elem("LT", "performer still owns it")}, tuid)


def test_completed_is_409(ups: Ups, completed: tuple[str, str]) -> None:
    """COMPLETED: C311 → 409 (2026a Warning 'The UPS is already COMPLETED.' checked when sent)."""
    uid, _ = completed
    response = ups.request_cancel(uid, _reason())
    expect.status(response, 409)
    expect.optional_warning(response, expect.CANCEL_ALREADY_COMPLETED, about="already")
    assert first(ups.get_final(uid), tags.PROCEDURE_STEP_STATE) == "COMPLETED"


def test_canceled_is_202_with_warning(ups: Ups, canceled: tuple[str, str]) -> None:
    """Already CANCELED: B304 → 202 + 'The UPS is already in the requested state of CANCELED.'"""
    uid, _ = canceled
    response = ups.request_cancel(uid)
    expect.status(response, 202)
    expect.warning(response, expect.ALREADY_CANCELED)


def test_repeated_request_is_202_with_warning(ups: Ups, scheduled: str) -> None:
    """A second request on a workitem the first one canceled gets the B304 Warning."""
    expect.status(ups.request_cancel(scheduled), 202)
    response = ups.request_cancel(scheduled, _reason())
    expect.status(response, 202)
    expect.warning(response, expect.ALREADY_CANCELED)


def test_unknown_is_404(ups: Ups) -> None:
    """No such workitem: C307 → 404."""
    expect.status(ups.request_cancel(new_uid()), 404)


def test_malformed_body_is_400(ups: Ups, scheduled: str) -> None:
    """A body that is not DICOM JSON is bad syntax (400) and cancels nothing."""
    response = ups.send("POST", ups.url(f"/{scheduled}/cancelrequest"), b"[{not json")
    expect.status(response, 400)
    assert ups.state_of(scheduled) == "SCHEDULED"
