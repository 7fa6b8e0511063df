"""Event reports to worklist subscribers: global (…34.5) and filtered (…34.5.1) subscriptions.

PS3.4 CC.2.3 (Table CC.2.3-2) and CC.2.4.3, PS3.18 11.10–11.12 — spec §1.3.7–1.3.9,
§4.2–4.3, §7 rows 10, 31. The worklist is shared with every other client of the server, so
each test looks only at the workitems it created (unique Worklist Labels) and uses its
own AE titles; a global subscription with lock is ended at teardown to release its locks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import expect
from .api import Ups
from .channel import (
    ASSIGNED,
    ASSIGNMENTS,
    FILTERED,
    FILTERING_UNSUPPORTED,
    GLOBAL,
    LOCK_NOT_GRANTED,
    STATE_REPORT,
    Channel,
    Subscriptions,
    assigned_to,
    channel_url,
    check_message,
    is_event,
    set_readiness,
)
from .dicomjson import token
from .workitem import new_workitem

LOCKS = pytest.mark.parametrize("lock", [None, False, True], ids=["no-deletionlock", "no-lock", "lock"])


@pytest.fixture
def subs(ups: Ups) -> Iterator[Subscriptions]:
    """Subscription requests and channels of this test, undone at teardown."""
    subscriptions = Subscriptions(ups)
    yield subscriptions
    subscriptions.close()


def worklist(subs: Subscriptions, *, lock: bool | None = None, need_lock: bool = False) -> tuple[Channel, str]:
    """A channel for a fresh AE, then a global subscription: (channel, AE title). With
    ``need_lock`` a refused lock (B301) skips the test: the initial reports depend on it."""
    aet = subs.aet()
    channel = subs.channel(aet)
    response = subs.subscribe_ok(GLOBAL, aet, lock=lock)
    if need_lock and LOCK_NOT_GRANTED in expect.warnings(response):
        pytest.skip("server refused the deletion lock (Warning B301): no initial reports to expect")
    return channel, aet


def create(ups: Ups, label: str, **kwargs: object) -> str:
    """A new workitem in this test's worklist."""
    return ups.create_ok(new_workitem(worklist_label=label, **kwargs))  # type: ignore[arg-type]


# --- Global subscription: new workitems ------------------------------------------------------------
@LOCKS
def test_new_workitem_reported_to_worklist_subscribers(
    ups: Ups, subs: Subscriptions, label: str, lock: bool | None,
) -> None:
    """A workitem created after a global Subscribe is reported at once: State Report with
    SCHEDULED and its Input Readiness State."""
    channel, _ = worklist(subs, lock=lock)
    uid = create(ups, label, readiness="INCOMPLETE")
    report = channel.wait_for(uid, STATE_REPORT)
    check_message(report, uid)
    assert (report.state, report.readiness) == ("SCHEDULED", "INCOMPLETE"), str(report)


def test_new_workitem_is_subscribed(ups: Ups, subs: Subscriptions, label: str) -> None:
    """A workitem created under a global subscription is subscribed: its later changes are reported."""
    channel, _ = worklist(subs)
    uid = create(ups, label, readiness="INCOMPLETE")
    channel.wait_for(uid, STATE_REPORT, state="SCHEDULED")
    set_readiness(ups, uid, "READY")
    tuid = ups.claim(uid)
    ups.complete(uid, tuid)
    channel.wait_for(uid, STATE_REPORT, state="COMPLETED")
    seen = [(event.state, event.readiness) for event in channel.events(is_event(uid, STATE_REPORT))]
    assert seen == [("SCHEDULED", "INCOMPLETE"), ("SCHEDULED", "READY"), ("IN PROGRESS", "READY"),
                    ("COMPLETED", "READY")], f"State Reports of {uid}: {seen}"


@pytest.mark.parametrize("what", ["station", "performer", "both"])
def test_assigned_on_create(ups: Ups, subs: Subscriptions, label: str, what: str) -> None:
    """A workitem created with a scheduled station or human performer also sends UPS Assigned."""
    channel, _ = worklist(subs)
    ds = new_workitem(worklist_label=label)
    for name in (ASSIGNMENTS if what == "both" else [what]):
        ds.update(ASSIGNMENTS[name]())
    uid = ups.create_ok(ds)
    channel.wait_for(uid, STATE_REPORT, state="SCHEDULED")
    for name in (ASSIGNMENTS if what == "both" else [what]):
        event = channel.wait(
            lambda e, n=name: is_event(uid, ASSIGNED)(e) and assigned_to(n)(e), f"UPS Assigned naming the {name}",
        )[0]
        check_message(event, uid)


def test_no_assigned_without_station_or_performer(ups: Ups, subs: Subscriptions, label: str) -> None:
    """Without a scheduled station or performer, creation sends a State Report but no UPS Assigned."""
    channel, _ = worklist(subs)
    bare = create(ups, label)
    assigned = ups.create_ok(new_workitem(worklist_label=label) | ASSIGNMENTS["station"]())
    channel.wait_for(assigned, ASSIGNED)
    channel.wait_for(bare, STATE_REPORT, state="SCHEDULED")
    channel.none(is_event(bare, ASSIGNED), "UPS Assigned for a workitem with neither station nor performer")


# --- Global subscription: existing workitems -----------------------------------------------------
def test_worklist_with_lock_reports_every_existing_workitem(ups: Ups, subs: Subscriptions, label: str) -> None:
    """Global Subscribe with lock: an initial State Report for each existing workitem (Table CC.2.3-2)."""
    scheduled = create(ups, label, readiness="INCOMPLETE")
    claimed = create(ups, label)
    ups.claim(claimed)
    channel, _ = worklist(subs, lock=True, need_lock=True)
    first_report = channel.wait_for(scheduled, STATE_REPORT)
    second_report = channel.wait_for(claimed, STATE_REPORT)
    check_message(first_report, scheduled)
    check_message(second_report, claimed)
    assert (first_report.state, first_report.readiness) == ("SCHEDULED", "INCOMPLETE"), str(first_report)
    assert (second_report.state, second_report.readiness) == ("IN PROGRESS", "READY"), str(second_report)


@pytest.mark.parametrize("lock", [None, False], ids=["no-deletionlock", "no-lock"])
def test_worklist_without_lock_no_initial_reports(ups: Ups, subs: Subscriptions, label: str, lock: bool | None) -> None:
    """Global Subscribe without lock sends nothing for existing workitems, yet subscribes them:
    their later changes are reported."""
    existing = [create(ups, label), create(ups, label)]
    channel, _ = worklist(subs, lock=lock)
    sentinel = create(ups, label)
    channel.wait_for(sentinel, STATE_REPORT)
    channel.none(lambda event: event.uid in existing, "initial State Report for an existing workitem")
    mark = channel.mark()
    for uid in existing:
        ups.claim(uid)
    for uid in existing:
        channel.wait_for(uid, STATE_REPORT, state="IN PROGRESS", since=mark)


# --- Suspend and global Unsubscribe ----------------------------------------------------------------
def test_suspend_stops_new_workitems_only(ups: Ups, subs: Subscriptions, label: str) -> None:
    """After Suspend no new workitem is reported; workitems subscribed before still are."""
    channel, aet = worklist(subs)
    witness, _ = worklist(subs)  # another global subscriber proves the creation is reported at all
    before = create(ups, label)
    channel.wait_for(before, STATE_REPORT)
    expect.status(subs.suspend(GLOBAL, aet), 200)
    mark = channel.mark()
    after = create(ups, label)
    witness.wait_for(after, STATE_REPORT, state="SCHEDULED")
    ups.claim(before)
    channel.wait_for(before, STATE_REPORT, state="IN PROGRESS", since=mark)
    ups.claim(after)
    witness.wait_for(after, STATE_REPORT, state="IN PROGRESS")
    channel.none(is_event(after), "event for a workitem created after Suspend", since=mark)


def test_unsubscribe_from_worklist_ends_every_event(ups: Ups, subs: Subscriptions, label: str) -> None:
    """Unsubscribe from the worklist UID ends every subscription of the AE — global, inherited
    and workitem-specific (Table CC.2.3-2)."""
    explicit = create(ups, label)
    channel, aet = worklist(subs, lock=True)
    witness, _ = worklist(subs)
    subs.subscribe_ok(explicit, aet)
    inherited = create(ups, label)
    channel.wait_for(explicit, STATE_REPORT)
    channel.wait_for(inherited, STATE_REPORT)
    witness.wait_for(inherited, STATE_REPORT)
    expect.status(subs.unsubscribe(GLOBAL, aet), 200)
    mark = channel.mark()
    ups.claim(explicit)
    ups.claim(inherited)
    new = create(ups, label)
    witness.wait_for(new, STATE_REPORT, state="SCHEDULED")
    witness.wait_for(inherited, STATE_REPORT, state="IN PROGRESS")
    ours = {explicit, inherited, new}
    channel.none(lambda event: event.uid in ours, "event after Unsubscribe from the worklist", since=mark)


def test_workitem_unsubscribe_beats_the_worklist(ups: Ups, subs: Subscriptions, label: str) -> None:
    """Unsubscribing from one workitem that a global subscription brought in stops its events only."""
    channel, aet = worklist(subs)
    dropped, kept = create(ups, label), create(ups, label)
    channel.wait_for(dropped, STATE_REPORT)
    channel.wait_for(kept, STATE_REPORT)
    expect.status(subs.unsubscribe(dropped, aet), 200)
    mark = channel.mark()
    ups.claim(dropped)
    ups.claim(kept)
    channel.wait_for(kept, STATE_REPORT, state="IN PROGRESS", since=mark)
    channel.none(is_event(dropped), "event for a workitem the AE unsubscribed from", since=mark)


# --- Filtered worklist subscription (2024c filter= and 2016e Attr=value) --------------------------
SYNTAXES = pytest.mark.parametrize("syntax", ["2024c-filter", "2016e-params"])


def filter_query(syntax: str, **keys: str) -> str:
    """Matching keys in the 2024c ``filter=A=v,B=w`` or the 2016e ``A=v&B=w`` form (§7 row 10)."""
    pairs = [f"{attribute}={value}" for attribute, value in keys.items()]
    return f"filter={','.join(pairs)}" if syntax == "2024c-filter" else "&".join(pairs)


def filtered(subs: Subscriptions, query: str, *, lock: bool | None = None) -> Channel:
    """A channel for a fresh AE, then a filtered worklist subscription — or a skip, with the
    reason, when the server answers 403 with the 'not supported' Warning (spec §7 row 31)."""
    aet = subs.aet()
    channel = subs.channel(aet)
    response = subs.subscribe(FILTERED, aet, lock=lock, query=query)
    if response.status_code == 403:
        expect.warning(response, FILTERING_UNSUPPORTED)
        pytest.skip("server does not support Filtered Worklist Subscriptions (403 + Warning, spec §7 row 31)")
    expect.status(response, 201)
    channel_url(response)
    if lock and LOCK_NOT_GRANTED in expect.warnings(response):
        pytest.skip("server refused the deletion lock (Warning B301): no initial reports to expect")
    return channel


@SYNTAXES
def test_filtered_reports_matching_new_workitems(ups: Ups, subs: Subscriptions, label: str, syntax: str) -> None:
    """Only new workitems that match the filter are reported."""
    channel = filtered(subs, filter_query(syntax, WorklistLabel=label))
    other = create(ups, token("WL-", 16))
    match = create(ups, label, readiness="INCOMPLETE")
    report = channel.wait_for(match, STATE_REPORT)
    check_message(report, match)
    assert (report.state, report.readiness) == ("SCHEDULED", "INCOMPLETE")
    channel.none(is_event(other), "event for a workitem outside the filter")


@SYNTAXES
def test_filtered_two_keys(ups: Ups, subs: Subscriptions, label: str, syntax: str) -> None:
    """Every matching key must match (here Worklist Label and Priority)."""
    channel = filtered(subs, filter_query(syntax, WorklistLabel=label, ScheduledProcedureStepPriority="HIGH"))
    low = create(ups, label, priority="LOW")
    high = create(ups, label, priority="HIGH")
    channel.wait_for(high, STATE_REPORT, state="SCHEDULED")
    channel.none(is_event(low), "event for a workitem matching only one of the two keys")


@SYNTAXES
def test_filtered_follows_matching_existing_workitems(ups: Ups, subs: Subscriptions, label: str, syntax: str) -> None:
    """Existing workitems that match are subscribed too (their changes are reported); others are not."""
    match, other = create(ups, label), create(ups, token("WL-", 16))
    channel = filtered(subs, filter_query(syntax, WorklistLabel=label))
    mark = channel.mark()
    ups.claim(other)
    ups.claim(match)
    channel.wait_for(match, STATE_REPORT, state="IN PROGRESS", since=mark)
    channel.none(is_event(other), "event for an existing workitem outside the filter")


def test_filtered_with_lock_reports_matching_existing_workitems(ups: Ups, subs: Subscriptions, label: str) -> None:
    """With lock, the filtered subscription sends an initial State Report for each existing
    matching workitem — as the global one does (spec §4.2) — and none for the others."""
    match, other = create(ups, label), create(ups, token("WL-", 16))
    channel = filtered(subs, filter_query("2024c-filter", WorklistLabel=label), lock=True)
    report = channel.wait_for(match, STATE_REPORT)
    check_message(report, match)
    assert report.state == "SCHEDULED"
    channel.none(is_event(other), "initial State Report for a workitem outside the filter")


def test_filtered_unsubscribe_ends_events(ups: Ups, subs: Subscriptions, label: str) -> None:
    """Unsubscribe from the filtered worklist UID: new matching workitems are no longer reported."""
    aet = subs.aet()
    channel = subs.channel(aet)
    response = subs.subscribe(FILTERED, aet, query=f"filter=WorklistLabel={label}")
    if response.status_code == 403:
        expect.warning(response, FILTERING_UNSUPPORTED)
        pytest.skip("server does not support Filtered Worklist Subscriptions (403 + Warning, spec §7 row 31)")
    expect.status(response, 201)
    witness, _ = worklist(subs)
    expect.status(subs.unsubscribe(FILTERED, aet), 200)
    mark = channel.mark()
    uid = create(ups, label)
    witness.wait_for(uid, STATE_REPORT)
    channel.none(is_event(uid), "event after Unsubscribe from the filtered worklist", since=mark)
