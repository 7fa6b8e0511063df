"""Subscribe, Unsubscribe, Suspend Global Subscription (RAD-86): PS3.18 11.10–11.12, PS3.4 CC.2.3.

Spec §1.3.7–1.3.9, §4.3–4.4 and §7 rows 8, 10, 28, 31: the responses a client sees and the
deletion lock. What the subscriptions deliver is in ``test_events*.py``. Every test uses
its own AE titles, and its subscriptions are ended at teardown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from . import expect, tags
from .api import Ups
from .channel import (
    FILTERED,
    FILTERING_UNSUPPORTED,
    GLOBAL,
    LOCK_NOT_GRANTED,
    QUIET,
    STATE_REPORT,
    Subscriptions,
    channel_url,
    check_message,
    is_event,
)
from .dicomjson import first, new_uid, token
from .workitem import new_workitem

LOCKS = pytest.mark.parametrize("lock", [None, True, False], ids=["no-deletionlock", "lock", "no-lock"])
TARGETS = pytest.mark.parametrize("target", ["workitem", "worklist"])


@pytest.fixture
def subs(ups: Ups) -> Iterator[Subscriptions]:
    """Subscription requests and channels of this test, undone at teardown."""
    subscriptions = Subscriptions(ups)
    yield subscriptions
    subscriptions.close()


def _target(ups: Ups, target: str) -> str:
    """A fresh SCHEDULED workitem UID, or the worklist's well-known UID."""
    return ups.create_ok(new_workitem()) if target == "workitem" else GLOBAL


def _filtered(subs: Subscriptions, aet: str, query: str, lock: bool | None = None) -> None:
    """Filtered worklist Subscribe that must succeed — or, if the server does not filter,
    403 with the sanctioned Warning, and then the test is skipped for that reason."""
    response = subs.subscribe(FILTERED, aet, lock=lock, query=query)
    if response.status_code == 403:
        expect.warning(response, FILTERING_UNSUPPORTED)
        pytest.skip("server does not support Filtered Worklist Subscriptions (403 + Warning, spec §7 row 31)")
    expect.status(response, 201)
    channel_url(response)


# --- Subscribe: success --------------------------------------------------------------------------
@LOCKS
@TARGETS
def test_subscribe_is_201_with_channel_url(ups: Ups, subs: Subscriptions, target: str, lock: bool | None) -> None:
    """201 with the ws(s) URL of the event channel in Content-Location (or Location, dcm4chee);
    a deletion lock may only be refused with the 'Deletion Lock not granted.' Warning."""
    response = subs.subscribe_ok(_target(ups, target), subs.aet(), lock=lock)
    assert channel_url(response)


@TARGETS
@pytest.mark.parametrize(("before", "after"), [(False, True), (True, False), (True, True), (None, None)])
def test_subscribe_again_is_201(
    ups: Ups, subs: Subscriptions, target: str, before: bool | None, after: bool | None,
) -> None:
    """Subscribing again, with the same or another lock value, is a valid transition (Table CC.2.3-2)."""
    uid, aet = _target(ups, target), subs.aet()
    subs.subscribe_ok(uid, aet, lock=before)
    subs.subscribe_ok(uid, aet, lock=after)


def test_subscribe_another_ae_than_the_requester(ups: Ups, subs: Subscriptions, scheduled: str) -> None:
    """The Receiving AE is whatever the path names; several AEs may subscribe to one workitem."""
    for aet in (subs.aet("A"), subs.aet("B"), subs.aet("C")):
        subs.subscribe_ok(scheduled, aet)


# --- Subscribe: failures -------------------------------------------------------------------------
@TARGETS
@pytest.mark.parametrize("value", ["maybe", "yes", "truee"])
def test_bad_deletionlock_is_400(ups: Ups, subs: Subscriptions, target: str, value: str) -> None:
    """deletionlock takes true or false only: anything else is bad syntax (400)."""
    response = subs.subscribe(_target(ups, target), subs.aet(), lock=value)
    expect.status(response, 400)


def test_bad_deletionlock_subscribes_nothing(ups: Ups, subs: Subscriptions) -> None:
    """A refused Subscribe changes no state: only the valid one that follows sends an initial report."""
    uid, aet = ups.create_ok(new_workitem()), subs.aet()
    channel = subs.channel(aet)
    expect.status(subs.subscribe(uid, aet, lock="maybe"), 400)
    subs.subscribe_ok(uid, aet)
    channel.wait_for(uid, STATE_REPORT)
    time.sleep(QUIET)
    reports = channel.events(is_event(uid, STATE_REPORT))
    assert len(reports) == 1, f"the refused Subscribe sent a State Report too: {channel.describe()}"


def test_unknown_workitem_is_404(subs: Subscriptions) -> None:
    """No such workitem: C307 → 404."""
    expect.status(subs.subscribe(new_uid(), subs.aet()), 404)


@TARGETS
@pytest.mark.parametrize("aet", ["A" * 17, "BAD\\AE"], ids=["17-characters", "backslash"])
def test_invalid_ae_title_is_400(ups: Ups, subs: Subscriptions, target: str, aet: str) -> None:
    """The AE title is VR AE: at most 16 characters, no backslash — anything else is 400."""
    expect.status(subs.subscribe(_target(ups, target), aet), 400)


@pytest.mark.parametrize("query", ["", "deletionlock=true", "filter="], ids=["none", "lock-only", "empty-filter"])
def test_filtered_without_filter(subs: Subscriptions, query: str) -> None:
    """A filtered worklist subscription needs matching keys: 400 — or 403 with the Warning of
    a server that does not filter (2024c text, or 2016e's)."""
    response = subs.subscribe(FILTERED, subs.aet(), query=query)
    if response.status_code == 403:
        expect.warning(response, FILTERING_UNSUPPORTED)
    else:
        expect.status(response, 400)


@pytest.mark.parametrize(
    "query",
    ["filter=WorklistLabel={label}", "WorklistLabel={label}",
     "filter=WorklistLabel={label},ScheduledProcedureStepPriority=HIGH",
     "WorklistLabel={label}&ScheduledProcedureStepPriority=HIGH",
     "deletionlock=true&filter=WorklistLabel={label}", "deletionlock=false&WorklistLabel={label}"],
    ids=["2024c-filter", "2016e-params", "2024c-two-keys", "2016e-two-keys", "2024c-lock", "2016e-no-lock"],
)
def test_filtered_subscribe_both_syntaxes(subs: Subscriptions, label: str, query: str) -> None:
    """Both filter syntaxes are accepted: 2024c ``filter=Attr=value,…`` and 2016e ``Attr=value`` (§7 row 10)."""
    _filtered(subs, subs.aet(), query.format(label=label))


# --- Unsubscribe --------------------------------------------------------------------------------
@TARGETS
def test_unsubscribe_is_200(ups: Ups, subs: Subscriptions, target: str) -> None:
    """Ending a subscription the AE holds: 200."""
    uid, aet = _target(ups, target), subs.aet()
    subs.subscribe_ok(uid, aet)
    response = subs.unsubscribe(uid, aet)
    expect.status(response, 200)


def test_unsubscribe_filtered_is_200(subs: Subscriptions, label: str) -> None:
    """Ending a filtered worklist subscription (2024c): 200."""
    aet = subs.aet()
    _filtered(subs, aet, f"filter=WorklistLabel={label}")
    expect.status(subs.unsubscribe(FILTERED, aet), 200)


def test_unsubscribe_unknown_workitem_is_404(subs: Subscriptions) -> None:
    """No such workitem, hence no such subscription: 404."""
    expect.status(subs.unsubscribe(new_uid(), subs.aet()), 404)


# --- Suspend Global Subscription -------------------------------------------------------------
@pytest.mark.parametrize("lock", [None, True], ids=["no-lock", "lock"])
def test_suspend_is_200(subs: Subscriptions, lock: bool | None) -> None:
    """Suspending a global subscription the AE holds: 200."""
    aet = subs.aet()
    subs.subscribe_ok(GLOBAL, aet, lock=lock)
    expect.status(subs.suspend(GLOBAL, aet), 200)


def test_suspend_filtered_is_200(subs: Subscriptions, label: str) -> None:
    """The filtered worklist subscription can be suspended too (PS3.18 11.12)."""
    aet = subs.aet()
    _filtered(subs, aet, f"WorklistLabel={label}")
    expect.status(subs.suspend(FILTERED, aet), 200)


def test_suspend_without_global_subscription_is_404(ups: Ups, subs: Subscriptions, scheduled: str) -> None:
    """An AE with no global subscription — none at all, or only a workitem one — gets 404."""
    expect.status(subs.suspend(GLOBAL, subs.aet()), 404)
    aet = subs.aet()
    subs.subscribe_ok(scheduled, aet)
    expect.status(subs.suspend(GLOBAL, aet), 404)


def test_suspend_twice_is_404(subs: Subscriptions) -> None:
    """Suspend sets the AE's global state to 'No Global Subscription' (Table CC.2.3-2): a second one is 404."""
    aet = subs.aet()
    subs.subscribe_ok(GLOBAL, aet)
    expect.status(subs.suspend(GLOBAL, aet), 200)
    expect.status(subs.suspend(GLOBAL, aet), 404)


def test_suspend_after_global_unsubscribe_is_404(subs: Subscriptions) -> None:
    """After Unsubscribe from the worklist the AE has no global subscription left to suspend."""
    aet = subs.aet()
    subs.subscribe_ok(GLOBAL, aet)
    expect.status(subs.unsubscribe(GLOBAL, aet), 200)
    expect.status(subs.suspend(GLOBAL, aet), 404)


# --- Deletion locks (spec §4.4: observable through retention only; no purge timing here) ----
def test_lock_on_completed_workitem(ups: Ups, subs: Subscriptions, completed: tuple[str, str]) -> None:
    """Subscribing with a lock to a COMPLETED workitem succeeds, reports COMPLETED, and the
    workitem stays retrievable while the lock is held."""
    uid, tuid = completed
    aet = subs.aet()
    channel = subs.channel(aet)
    response = subs.subscribe(uid, aet, lock=True)
    if response.status_code in (404, 410):
        pytest.skip("server purged the final-state workitem before it could be locked (allowed, spec §4.4)")
    expect.status(response, 201)
    expect.optional_warning(response, LOCK_NOT_GRANTED, about="lock")
    report = channel.wait_for(uid, STATE_REPORT)
    check_message(report, uid)
    assert report.state == "COMPLETED"
    retrieved = ups.retrieve(uid)
    if LOCK_NOT_GRANTED in expect.warnings(response) and retrieved.status_code in (404, 410):
        pytest.skip("lock not granted (Warning B301) and the workitem was purged")
    expect.status(retrieved, 200)
    ds = expect.single_dataset(retrieved)
    assert first(ds, tags.PROCEDURE_STEP_STATE) == "COMPLETED"
    assert tuid not in retrieved.text


@pytest.mark.parametrize("target", ["workitem", "worklist"])
@pytest.mark.parametrize("final", ["COMPLETED", "CANCELED"])
def test_lock_holds_through_final_state(ups: Ups, subs: Subscriptions, target: str, final: str) -> None:
    """A workitem locked (directly, or through a global subscription with lock) before it
    reaches a final state is still there to Retrieve after the final State Report (§4.4)."""
    uid = ups.create_ok(new_workitem(worklist_label=token("WL-", 16)))
    tuid = ups.claim(uid)
    aet = subs.aet()
    channel = subs.channel(aet)
    response = subs.subscribe_ok(uid if target == "workitem" else GLOBAL, aet, lock=True)
    if LOCK_NOT_GRANTED in expect.warnings(response):
        pytest.skip("server refused the deletion lock (Warning B301): retention is not guaranteed")
    channel.wait_for(uid, STATE_REPORT, state="IN PROGRESS")
    if final == "COMPLETED":
        ups.complete(uid, tuid)
    else:
        ups.cancel(uid, tuid)
    channel.wait_for(uid, STATE_REPORT, state=final)
    retrieved = ups.retrieve(uid)
    expect.status(retrieved, 200)
    assert first(expect.single_dataset(retrieved), tags.PROCEDURE_STEP_STATE) == final
