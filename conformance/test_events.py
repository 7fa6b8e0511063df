"""Event reports to workitem subscribers (RAD-87 over RAD-109): PS3.4 CC.2.4, PS3.18 8.10, 11.13.

Spec §1.3.10–1.3.11, §4.1–4.2 and §7 rows 11, 13, 19–20: the initial State Report, a State
Report for every change of Procedure Step State or Input Readiness State, Progress
Reports, UPS Assigned, UPS Cancel Requested, the message format, and how channels and
subscriptions relate. Each test opens its channel before it subscribes. Worklist and
filtered subscriptions are in ``test_events_worklist.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from . import expect, tags
from .api import Ups
from .channel import (
    ASSIGNED,
    ASSIGNMENTS,
    CANCEL_REQUESTED,
    COMMUNICATIONS_URI_SEQ,
    PROGRESS_REPORT,
    REQUESTING_AE,
    STATE_REPORT,
    Event,
    Subscriptions,
    assert_order,
    assigned_to,
    check_message,
    decimal,
    is_event,
    set_readiness,
    station,
    watch,
)
from .dicomjson import Dataset, code, code_values, elem, first, items, sq
from .workitem import new_workitem

CANCEL_CODE = ("110514", "DCM", "Incorrect worklist entry selected")


@pytest.fixture
def subs(ups: Ups) -> Iterator[Subscriptions]:
    """Subscription requests and channels of this test, undone at teardown."""
    subscriptions = Subscriptions(ups)
    yield subscriptions
    subscriptions.close()


def progress_item(event: Event) -> Dataset:
    """The Procedure Step Progress Information Sequence item of a Progress Report."""
    progress = items(event.ds, tags.PROGRESS_INFORMATION_SEQ)
    assert progress, f"Progress Report without a Progress Information Sequence item: {event.text}"
    return progress[0]


def cancel_dataset() -> Dataset:
    """A Request Cancellation dataset with every optional attribute (PS3.4 Table CC.2.2-2)."""
    return {
        tags.REASON_FOR_CANCELLATION: elem("LT", "Wrong series selected"),
        tags.DISCONTINUATION_REASON_CODE_SEQ: sq(code(*CANCEL_CODE)),
        tags.CONTACT_URI: elem("UR", "mailto:radiology@example.org"),
        tags.CONTACT_DISPLAY_NAME: elem("LO", "Radiology desk"),
    }


# --- The initial State Report (Table CC.2.3-2) -------------------------------------------------
@pytest.mark.parametrize("lock", [None, True, False], ids=["no-deletionlock", "lock", "no-lock"])
def test_initial_state_report(ups: Ups, subs: Subscriptions, lock: bool | None) -> None:
    """Subscribing to a workitem, with or without lock, sends its current states at once."""
    uid = ups.create_ok(new_workitem(readiness="INCOMPLETE"))
    aet = subs.aet()
    channel = subs.channel(aet)
    subs.subscribe_ok(uid, aet, lock=lock)
    report = channel.wait_for(uid, STATE_REPORT)
    check_message(report, uid)
    assert (report.state, report.readiness) == ("SCHEDULED", "INCOMPLETE"), str(report)


def test_initial_state_report_shows_the_current_state(ups: Ups, subs: Subscriptions, in_progress: tuple[str, str]) -> None:
    """The initial report of a claimed workitem says IN PROGRESS."""
    uid, _ = in_progress
    report = watch(subs, uid).wait_for(uid, STATE_REPORT)
    check_message(report, uid)
    assert (report.state, report.readiness) == ("IN PROGRESS", "READY"), str(report)


@pytest.mark.parametrize(
    ("before", "after"), [(False, False), (False, True), (True, False), (True, True), (None, None)],
)
def test_resubscribe_sends_another_initial_report(
    ups: Ups, subs: Subscriptions, before: bool | None, after: bool | None,
) -> None:
    """Every Subscribe to a workitem sends an initial report, also when already subscribed."""
    uid, aet = ups.create_ok(new_workitem()), subs.aet()
    channel = subs.channel(aet)
    subs.subscribe_ok(uid, aet, lock=before)
    channel.wait_for(uid, STATE_REPORT)
    subs.subscribe_ok(uid, aet, lock=after)
    report = channel.wait_for(uid, STATE_REPORT, count=2, what="second initial State Report")
    assert report.state == "SCHEDULED"


# --- State Reports on every change ------------------------------------------------------------
@pytest.mark.parametrize("final", ["COMPLETED", "CANCELED"])
def test_state_report_on_every_state_change(ups: Ups, subs: Subscriptions, scheduled: str, final: str) -> None:
    """Claim and completion (or cancellation) each send a State Report, in order, and no
    message ever shows the Transaction UID."""
    channel = watch(subs, scheduled)
    mark = channel.mark()
    tuid = ups.claim(scheduled)
    claimed = channel.wait_for(scheduled, STATE_REPORT, state="IN PROGRESS", since=mark)
    if final == "COMPLETED":
        ups.complete(scheduled, tuid)
    else:
        ups.cancel(scheduled, tuid)
    ended = channel.wait_for(scheduled, STATE_REPORT, state=final, since=mark)
    for report in (claimed, ended):
        check_message(report, scheduled)
        assert report.readiness == "READY"
    assert_order(channel, scheduled, ["SCHEDULED", "IN PROGRESS", final])
    leaked = [event for event in channel.events() if tuid in event.text]
    assert not leaked, f"event reports carry the Transaction UID: {[str(event) for event in leaked]}"


@pytest.mark.parametrize(("before", "after"), [("INCOMPLETE", "READY"), ("READY", "UNAVAILABLE")])
def test_state_report_on_readiness_change(ups: Ups, subs: Subscriptions, before: str, after: str) -> None:
    """An Update of Input Readiness State sends a State Report with the new value."""
    uid = ups.create_ok(new_workitem(readiness=before))
    channel = watch(subs, uid)
    mark = channel.mark()
    set_readiness(ups, uid, after)
    report = channel.wait(
        lambda event: is_event(uid, STATE_REPORT)(event) and event.readiness == after,
        f"State Report with Input Readiness State {after}", since=mark,
    )[0]
    check_message(report, uid)
    assert report.state == "SCHEDULED"


def test_state_report_on_readiness_change_in_progress(ups: Ups, subs: Subscriptions) -> None:
    """The performer may change Input Readiness State too (with its Transaction UID)."""
    uid = ups.create_ok(new_workitem(readiness="INCOMPLETE"))
    tuid = ups.claim(uid)
    channel = watch(subs, uid)
    mark = channel.mark()
    set_readiness(ups, uid, "READY", tuid)
    report = channel.wait(
        lambda event: is_event(uid, STATE_REPORT)(event) and event.readiness == "READY",
        "State Report with Input Readiness State READY", since=mark,
    )[0]
    assert report.state == "IN PROGRESS"


# --- UPS Progress Report ------------------------------------------------------------------------
def test_progress_report_on_progress_updates(ups: Ups, subs: Subscriptions, in_progress: tuple[str, str]) -> None:
    """Each Update of Procedure Step Progress / Description sends a Progress Report with the new content."""
    uid, tuid = in_progress
    channel = watch(subs, uid)
    for percent, text in (("25", "loading series"), ("80", "segmenting")):
        mark = channel.mark()
        ups.update_ok(uid, {tags.PROGRESS_INFORMATION_SEQ: sq({
            tags.PROGRESS: elem("DS", percent), tags.PROGRESS_DESCRIPTION: elem("ST", text),
        })}, tuid)
        report = channel.wait_for(uid, PROGRESS_REPORT, since=mark)
        check_message(report, uid)
        item = progress_item(report)
        assert decimal(first(item, tags.PROGRESS)) == decimal(percent), f"progress in {report.text}"
        assert first(item, tags.PROGRESS_DESCRIPTION) == text


def test_progress_report_on_communications_uri(ups: Ups, subs: Subscriptions, in_progress: tuple[str, str]) -> None:
    """An Update of the Procedure Step Communications URI Sequence sends a Progress Report carrying it."""
    uid, tuid = in_progress
    channel = watch(subs, uid)
    mark = channel.mark()
    uri = "https://ai.example.org/jobs/42"
    ups.update_ok(uid, {tags.PROGRESS_INFORMATION_SEQ: sq({
        COMMUNICATIONS_URI_SEQ: sq({tags.CONTACT_URI: elem("UR", uri), tags.CONTACT_DISPLAY_NAME: elem("LO", "AI job")}),
    })}, tuid)
    report = channel.wait_for(uid, PROGRESS_REPORT, since=mark)
    check_message(report, uid)
    uris = [first(item, tags.CONTACT_URI) for item in items(progress_item(report), COMMUNICATIONS_URI_SEQ)]
    assert uri in uris, f"Progress Report does not carry the Communications URI: {report.text}"


# --- UPS Assigned ---------------------------------------------------------------------------------
@pytest.mark.parametrize("what", sorted(ASSIGNMENTS))
def test_assigned_on_update(ups: Ups, subs: Subscriptions, scheduled: str, what: str) -> None:
    """Updating Scheduled Station Name Code Sequence or Scheduled Human Performers Sequence
    sends UPS Assigned with the station code, or the performer's code and organization."""
    channel = watch(subs, scheduled)
    mark = channel.mark()
    ups.update_ok(scheduled, ASSIGNMENTS[what]())
    event = channel.wait(
        lambda e: is_event(scheduled, ASSIGNED)(e) and assigned_to(what)(e),
        f"UPS Assigned naming the {what}", since=mark,
    )[0]
    check_message(event, scheduled)


# --- UPS Cancel Requested and Request Cancellation ------------------------------------------------
@pytest.mark.parametrize("with_body", [True, False], ids=["reason-body", "no-body"])
def test_cancel_requested_reaches_the_performer(
    ups: Ups, subs: Subscriptions, in_progress: tuple[str, str], with_body: bool,
) -> None:
    """Request Cancellation of an IN PROGRESS workitem: 202, and the subscribed performer gets
    UPS Cancel Requested with the Requesting AE and whatever reason, code and contact were sent."""
    uid, _ = in_progress
    channel = watch(subs, uid)
    mark = channel.mark()
    expect.status(ups.request_cancel(uid, cancel_dataset() if with_body else None), 202)
    event = channel.wait_for(uid, CANCEL_REQUESTED, since=mark)
    check_message(event, uid)
    assert event.vr(REQUESTING_AE) == "AE" and event.requesting_ae
    if with_body:
        assert first(event.ds, tags.REASON_FOR_CANCELLATION) == "Wrong series selected", event.text
        assert code_values(event.ds, tags.DISCONTINUATION_REASON_CODE_SEQ) == [CANCEL_CODE[0]], event.text
        assert first(event.ds, tags.CONTACT_URI) == "mailto:radiology@example.org", event.text
        assert first(event.ds, tags.CONTACT_DISPLAY_NAME) == "Radiology desk", event.text
    channel.none(is_event(uid, STATE_REPORT), "State Report: a cancel request leaves an IN PROGRESS workitem alone",
                 since=mark)
    assert ups.state_of(uid) == "IN PROGRESS"


def test_request_cancellation_of_scheduled_reports_in_progress_then_canceled(
    ups: Ups, subs: Subscriptions, scheduled: str,
) -> None:
    """Request Cancellation of a SCHEDULED workitem: the SCP takes it IN PROGRESS, then CANCELED
    (PS3.4 CC.2.2.3), and subscribers see both State Reports in that order."""
    channel = watch(subs, scheduled)
    mark = channel.mark()
    expect.status(ups.request_cancel(scheduled, cancel_dataset()), 202)
    canceled = channel.wait_for(scheduled, STATE_REPORT, state="CANCELED", since=mark)
    check_message(canceled, scheduled)
    assert_order(channel, scheduled, ["IN PROGRESS", "CANCELED"], since=mark)


# --- Message format (spec §1.3.11, §4.1, §7 row 13) -------------------------------------------------
def test_every_event_type_is_well_formed(ups: Ups, subs: Subscriptions) -> None:
    """State Report, UPS Assigned, Progress Report and Cancel Requested of one workitem are
    DICOM JSON objects with the command attributes of PS3.4 CC.2.4 and without the Transaction UID."""
    uid = ups.create_ok(new_workitem())
    channel = watch(subs, uid, lock=True)
    ups.update_ok(uid, station())
    channel.wait_for(uid, ASSIGNED)
    tuid = ups.claim(uid)
    ups.update_ok(uid, {tags.PROGRESS_INFORMATION_SEQ: sq({tags.PROGRESS: elem("DS", "50")})}, tuid)
    channel.wait_for(uid, PROGRESS_REPORT)
    expect.status(ups.request_cancel(uid, cancel_dataset()), 202)
    channel.wait_for(uid, CANCEL_REQUESTED)
    ups.complete(uid, tuid)
    channel.wait_for(uid, STATE_REPORT, state="COMPLETED")
    ours = channel.events(is_event(uid))
    assert {event.type for event in ours} >= {STATE_REPORT, ASSIGNED, PROGRESS_REPORT, CANCEL_REQUESTED}
    for event in channel.events():
        check_message(event)
        assert tuid not in event.text, f"event carries the Transaction UID: {event.text}"
    assert_order(channel, uid, ["SCHEDULED", "IN PROGRESS", "COMPLETED"])


# --- Channels and subscriptions -----------------------------------------------------------------
def test_every_connection_of_an_ae_gets_every_event(ups: Ups, subs: Subscriptions, scheduled: str) -> None:
    """One AE may hold several channels: each receives every event (spec §1.3.10)."""
    aet = subs.aet()
    channels = [subs.channel(aet) for _ in range(3)]
    subs.subscribe_ok(scheduled, aet)
    for channel in channels:
        channel.wait_for(scheduled, STATE_REPORT, state="SCHEDULED")
    tuid = ups.claim(scheduled)
    ups.cancel(scheduled, tuid)
    for channel in channels:
        channel.wait_for(scheduled, STATE_REPORT, state="CANCELED")
        assert_order(channel, scheduled, ["SCHEDULED", "IN PROGRESS", "CANCELED"])


def test_channel_of_an_ae_without_subscription_is_accepted(ups: Ups, subs: Subscriptions, scheduled: str) -> None:
    """A WebSocket for an AE that holds no subscription is accepted and stays open (the standard
    allows it); a subscription made later is then served on it."""
    aet = subs.aet()
    channel = subs.channel(aet)  # the handshake succeeded: the AE holds no subscription
    time.sleep(0.5)
    assert channel.open, f"server closed the channel of an AE without subscription: {channel.close_reason}"
    subs.subscribe_ok(scheduled, aet)
    channel.wait_for(scheduled, STATE_REPORT, state="SCHEDULED")


def test_subscription_outlives_its_channel(ups: Ups, subs: Subscriptions, scheduled: str) -> None:
    """Closing the channel does not end the subscription: a new channel gets the later events."""
    aet = subs.aet()
    first_channel = watch(subs, scheduled, aet=aet)
    first_channel.close()
    second = subs.channel(aet)
    ups.claim(scheduled)
    second.wait_for(scheduled, STATE_REPORT, state="IN PROGRESS")


def test_unsubscribe_ends_the_events_of_that_workitem(ups: Ups, subs: Subscriptions) -> None:
    """After Unsubscribe from a workitem its changes are not reported; other subscriptions go on."""
    gone, kept = ups.create_ok(new_workitem()), ups.create_ok(new_workitem())
    aet = subs.aet()
    channel = watch(subs, gone, aet=aet)
    subs.subscribe_ok(kept, aet)
    channel.wait_for(kept, STATE_REPORT)
    expect.status(subs.unsubscribe(gone, aet), 200)
    mark = channel.mark()
    set_readiness(ups, gone, "UNAVAILABLE")
    ups.claim(gone)
    ups.claim(kept)
    channel.wait_for(kept, STATE_REPORT, state="IN PROGRESS", since=mark)
    channel.none(is_event(gone), f"event for the unsubscribed workitem {gone}", since=mark)


def test_events_go_only_to_subscribers(ups: Ups, subs: Subscriptions) -> None:
    """Each AE hears about the workitems it subscribed to and no others."""
    mine, theirs = ups.create_ok(new_workitem()), ups.create_ok(new_workitem())
    me, them = watch(subs, mine), watch(subs, theirs)
    mark_me, mark_them = me.mark(), them.mark()
    ups.claim(mine)
    ups.claim(theirs)
    me.wait_for(mine, STATE_REPORT, state="IN PROGRESS", since=mark_me)
    them.wait_for(theirs, STATE_REPORT, state="IN PROGRESS", since=mark_them)
    me.none(is_event(theirs), "event for a workitem the AE did not subscribe to")
    them.none(is_event(mine), "event for a workitem the AE did not subscribe to", quiet=0)
