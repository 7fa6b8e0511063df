"""The UPS state machine, PS3.4 Table CC.1.1-2 (spec sec. 2.2) and the Update rules of
CC.2.6.3 (spec sec. 2.3), row by row through ``upsrs.states.decide``.

The expected table is written here from the spec, not read from transitions.txt.
"""

from __future__ import annotations

import pytest

from upsrs import states
from upsrs.states import CANCELED, COMPLETED, IN_PROGRESS, SCHEDULED, Decision

LOCK = "2.25.111"  # the Transaction UID recorded when the workitem was claimed
OTHER = "2.25.222"

# What each workitem stores as its lock in each state (SCHEDULED: none yet).
STORED = {SCHEDULED: "", IN_PROGRESS: LOCK, COMPLETED: LOCK, CANCELED: LOCK}

# Request TUID forms: correct (the lock), incorrect (another UID), missing (absent / empty).
FORMS = {
    "correct": lambda state: OTHER if state == SCHEDULED else LOCK,  # a claim brings a new UID
    "incorrect": lambda state: OTHER,
    "missing-none": lambda state: None,
    "missing-empty": lambda state: "",
}

# spec sec. 2.2: (request, tuid form) -> {state: expected}; expected is a tuple of states to pass
# through, "update", "event:<name>", or a DIMSE status.
P = tuple
EXPECTED: dict[tuple[str, str], dict[str, object]] = {
    (IN_PROGRESS, "correct"): {SCHEDULED: P([IN_PROGRESS]), IN_PROGRESS: "C302", COMPLETED: "C300", CANCELED: "C300"},
    (IN_PROGRESS, "incorrect"): {IN_PROGRESS: "C301:incorrect", COMPLETED: "C301:incorrect", CANCELED: "C301:incorrect"},
    (IN_PROGRESS, "missing"): {s: "C301:missing" for s in states.STATES},
    (COMPLETED, "correct"): {SCHEDULED: "C310", IN_PROGRESS: P([COMPLETED]), COMPLETED: "B306", CANCELED: "C300"},
    (COMPLETED, "incorrect"): {IN_PROGRESS: "C301:incorrect", COMPLETED: "C301:incorrect", CANCELED: "C301:incorrect"},
    (COMPLETED, "missing"): {s: "C301:missing" for s in states.STATES},
    (CANCELED, "correct"): {SCHEDULED: "C310", IN_PROGRESS: P([CANCELED]), COMPLETED: "C300", CANCELED: "B304"},
    (CANCELED, "incorrect"): {IN_PROGRESS: "C301:incorrect", COMPLETED: "C301:incorrect", CANCELED: "C301:incorrect"},
    (CANCELED, "missing"): {s: "C301:missing" for s in states.STATES},
    (SCHEDULED, "correct"): {s: "C303" for s in states.STATES},
    (SCHEDULED, "incorrect"): {s: "C303" for s in (IN_PROGRESS, COMPLETED, CANCELED)},
    (SCHEDULED, "missing"): {s: "C303" for s in states.STATES},
    # spec sec. 2.3 / CC.2.6.3: Update
    ("update", "correct"): {SCHEDULED: "C310", IN_PROGRESS: "update", COMPLETED: "C300", CANCELED: "C300"},
    ("update", "incorrect"): {IN_PROGRESS: "C301:incorrect", COMPLETED: "C300", CANCELED: "C300"},
    ("update", "missing"): {SCHEDULED: "update", IN_PROGRESS: "C301:missing", COMPLETED: "C300", CANCELED: "C300"},
}
CANCEL_REQUEST = {
    SCHEDULED: P([IN_PROGRESS, CANCELED]),  # the SCP cancels it itself: two State Reports
    IN_PROGRESS: "event:cancel-requested",  # tell the performer
    COMPLETED: "C311",
    CANCELED: "B304",
}


def _cases() -> list[tuple[str, str, str, str | None, object]]:
    out = []
    for (request, form), row in EXPECTED.items():
        forms = ["missing-none", "missing-empty"] if form == "missing" else [form]
        for f in forms:
            for state, expected in row.items():
                out.append((request, f, state, FORMS[f](state), expected))
    return out


CASES = _cases()


def _check(d: Decision, expected: object) -> None:
    if isinstance(expected, tuple):
        assert d.path == expected and d.status == "0000" and not d.update and not d.event
        assert not d.refused
    elif expected == "update":
        assert d.update and not d.path and d.status == "0000" and not d.refused
    elif isinstance(expected, str) and expected.startswith("event:"):
        assert d.event == expected[6:] and not d.path and not d.update and d.status == "0000"
    else:
        assert d.status == expected and not d.path and not d.update and not d.event
        assert d.refused == expected.startswith("C"), d  # B3xx: success without change


@pytest.mark.parametrize("request_,form,state,given,expected", CASES,
                         ids=[f"{r}|{f}|{s}" for r, f, s, _, _ in CASES])
def test_transition_table_row_by_row(request_: str, form: str, state: str, given: str | None, expected: object) -> None:
    _check(states.decide(request_, state, given, STORED[state]), expected)


@pytest.mark.parametrize("state", states.STATES)
def test_request_cancellation(state: str) -> None:
    _check(states.decide("cancelrequest", state), CANCEL_REQUEST[state])
    # a Transaction UID has no say in a cancellation request
    _check(states.decide("cancelrequest", state, OTHER, STORED[state]), CANCEL_REQUEST[state])


def test_every_cell_of_the_spec_table_is_covered() -> None:
    covered = {(r, s) for r, _, s, _, _ in CASES}
    requests = [*states.STATES, "update"]
    assert covered == {(r, s) for r in requests for s in states.STATES}
    assert len(CASES) >= 4 * 5 * 4 - 10


# ---------------------------------------------------------------- TUID classification
@pytest.mark.parametrize("state", [IN_PROGRESS, COMPLETED, CANCELED])
def test_tuid_classification_against_the_stored_lock(state: str) -> None:
    assert states.classify_tuid(LOCK, LOCK, state) == "correct"
    assert states.classify_tuid(OTHER, LOCK, state) == "incorrect"
    assert states.classify_tuid(LOCK + "1", LOCK, state) == "incorrect"  # a prefix is not the lock
    assert states.classify_tuid(None, LOCK, state) == "missing"
    assert states.classify_tuid("", LOCK, state) == "missing"


@pytest.mark.parametrize("given", ["1.2.3", OTHER, LOCK, "2.25.99999999999999999999"])
def test_scheduled_accepts_any_tuid_as_correct_for_the_claim(given: str) -> None:
    for stored in ("", "4.5.6"):
        assert states.classify_tuid(given, stored, SCHEDULED) == "correct"
        d = states.decide(IN_PROGRESS, SCHEDULED, given, stored)
        assert d.path == (IN_PROGRESS,)
    assert states.classify_tuid("", "", SCHEDULED) == "missing"
    assert states.decide(IN_PROGRESS, SCHEDULED, None, "").status == "C301:missing"


def test_second_claimer_is_refused_with_c301_and_the_first_one_with_c302() -> None:
    assert states.decide(IN_PROGRESS, IN_PROGRESS, OTHER, LOCK).status == "C301:incorrect"
    assert states.decide(IN_PROGRESS, IN_PROGRESS, LOCK, LOCK).status == "C302"


def test_already_final_warnings_need_the_correct_tuid() -> None:
    """Spec sec. 2.2 note / sec. 7 row 16: B304/B306 only with the correct TUID; else C301."""
    assert states.decide(COMPLETED, COMPLETED, LOCK, LOCK).status == "B306"
    assert states.decide(COMPLETED, COMPLETED, OTHER, LOCK).status == "C301:incorrect"
    assert states.decide(CANCELED, CANCELED, LOCK, LOCK).status == "B304"
    assert states.decide(CANCELED, CANCELED, None, LOCK).status == "C301:missing"


def test_unknown_request_or_state_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        states.decide("PAUSED", SCHEDULED, LOCK, "")
    with pytest.raises(LookupError):
        states.decide(COMPLETED, "DONE", LOCK, LOCK)
    with pytest.raises(LookupError):
        states.decide("cancelrequest", "scheduled")


def test_final_states() -> None:
    assert states.FINAL_STATES == {COMPLETED, CANCELED}
    assert states.STATES == (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
