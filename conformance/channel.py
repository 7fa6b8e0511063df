"""Subscriptions and the event channel as a UPS-RS client sees them (spec §1.3.7–1.3.11, §4).

``Subscriptions`` sends Subscribe / Unsubscribe / Suspend requests (PS3.18 11.10–11.12) and
opens event channels; ``Channel`` is one WebSocket (RFC 6455) whose DICOM JSON event
reports are collected by a background thread, so a test can act and then wait for what it
expects. Rules every test follows (spec §7 rows 9 and 11):

* the channel URL is the one a Subscribe response advertised (Content-Location, else
  Location) — the 2024c standard fixes no URL template;
* a channel is open *before* the subscriptions under test are made, because a server need
  not queue events for a closed channel and the initial State Report is sent at once.

To learn an AE's channel URL before it subscribes to what a test is about, ``channel``
subscribes the AE to a scratch workitem, reads the URL and unsubscribes again: the AE
starts the test with no subscription and an open channel.

Negative checks ("no event for X") are never vacuous: the test first waits for an event
the server must send after the one it must not (a sentinel), then lets ``QUIET`` seconds
pass, since PS3.4 orders events only within one workitem.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from . import expect, tags
from .api import Ups
from .dicomjson import Dataset, code, code_values, elem, first, pn, sq, token, values
from .workitem import CONFORMANCE_SCHEME, STATION_CODE, new_workitem

# Well-known SOP Instance UIDs of the worklist (PS3.4 CC.3.1.1, spec §0.2).
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"

# Command attributes of an N-EVENT-REPORT (PS3.7) carried in every message (spec §4.1).
AFFECTED_SOP_CLASS_UID = "00000002"
COMMAND_FIELD = "00000100"
MESSAGE_ID = "00000110"
AFFECTED_SOP_INSTANCE_UID = "00001000"
EVENT_TYPE_ID = "00001002"
N_EVENT_REPORT_RQ = 0x0100

# Event information attributes (PS3.4 Table CC.2.4-1) not already in ``tags``.
REQUESTING_AE = "00741236"
HUMAN_PERFORMER_CODE_SEQ = "00404009"
HUMAN_PERFORMER_ORGANIZATION = "00404036"
HUMAN_PERFORMER_NAME = "00404037"
COMMUNICATIONS_URI_SEQ = "00741008"

# Event Type IDs (PS3.4 Table CC.2.4-1).
STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5
EVENT_NAMES = {
    STATE_REPORT: "UPS State Report", CANCEL_REQUESTED: "UPS Cancel Requested",
    PROGRESS_REPORT: "UPS Progress Report", SCP_STATUS_CHANGE: "SCP Status Change",
    ASSIGNED: "UPS Assigned",
}
STATES = frozenset({"SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"})
READINESS = frozenset({"READY", "INCOMPLETE", "UNAVAILABLE"})

# Subscribe Warning texts (spec Appendix A).
LOCK_NOT_GRANTED = "Deletion Lock not granted."
FILTERING_UNSUPPORTED = frozenset({
    "Filtered Worklist Subscriptions are not supported.",  # 2024c
    "The Origin-Server does not support Global Subscription Filtering.",  # 2016e
})

WAIT = 5.0  # events normally arrive in well under a second
QUIET = 1.0  # silence awaited after a sentinel before asserting that something did not come



# --- one event report ------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One event report as received: its DICOM JSON object, raw text and arrival index."""

    ds: Dataset
    text: str
    index: int
    received: float

    @property
    def type(self) -> Any:
        """Event Type ID (0000,1002)."""
        return first(self.ds, EVENT_TYPE_ID)

    @property
    def uid(self) -> Any:
        """Affected SOP Instance UID (0000,1000): the workitem."""
        return first(self.ds, AFFECTED_SOP_INSTANCE_UID)

    @property
    def message_id(self) -> Any:
        """Message ID (0000,0110)."""
        return first(self.ds, MESSAGE_ID)

    @property
    def sop_class(self) -> Any:
        """Affected SOP Class UID (0000,0002)."""
        return first(self.ds, AFFECTED_SOP_CLASS_UID)

    @property
    def state(self) -> Any:
        """Procedure Step State (0074,1000) of a State Report."""
        return first(self.ds, tags.PROCEDURE_STEP_STATE)

    @property
    def readiness(self) -> Any:
        """Input Readiness State (0040,4041) of a State Report."""
        return first(self.ds, tags.INPUT_READINESS_STATE)

    @property
    def requesting_ae(self) -> Any:
        """Requesting AE (0074,1236) of a Cancel Requested event."""
        return first(self.ds, REQUESTING_AE)

    def vr(self, tag: str) -> str | None:
        """The VR the message gives ``tag`` (None when absent)."""
        attribute = self.ds.get(tag)
        return attribute.get("vr") if isinstance(attribute, dict) else None

    def __str__(self) -> str:
        name = EVENT_NAMES.get(self.type, f"event type {self.type!r}")
        detail = f" {self.state}/{self.readiness}" if self.type == STATE_REPORT else ""
        return f"#{self.index} {name}{detail} uid={self.uid}"


def is_event(uid: str | None = None, type_: int | None = None, state: str | None = None) -> Callable[[Event], bool]:
    """Predicate: an event of workitem ``uid`` / type ``type_`` / Procedure Step State ``state``."""

    def match(event: Event) -> bool:
        return ((uid is None or event.uid == uid) and (type_ is None or event.type == type_)
                and (state is None or event.state == state))

    return match


def _us(event: Event, tag: str, name: str) -> int:
    """The single unsigned-short value of a command attribute, checked (VR US, 0..65535)."""
    assert event.vr(tag) == "US", f"{name} ({tag[:4]},{tag[4:]}) must have VR US, got {event.vr(tag)!r}: {event.text}"
    found = values(event.ds, tag)
    assert len(found) == 1, f"{name} must have one value: {event.text}"
    value = found[0]
    assert isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0xFFFF, (
        f"{name} is not an unsigned short: {value!r}"
    )
    return value


def check_message(event: Event, uid: str | None = None) -> None:
    """Assert ``event`` is a well-formed UPS event report (spec §1.3.11, §4.1, §7 row 13).

    Affected SOP Class UID is the UPS Push SOP Class (PS3.4 CC.2.4.3 is normative; the
    PS3.18 examples showing the Event SOP Class are wrong), Message ID and Event Type ID
    are US, Affected SOP Instance UID names the workitem, a State Report carries both
    states as CS, and no message ever carries the Transaction UID.
    """
    expect.well_formed(event.ds, what="message")
    assert event.vr(AFFECTED_SOP_CLASS_UID) == "UI", f"Affected SOP Class UID must be UI: {event.text}"
    assert event.sop_class == tags.UPS_PUSH_SOP_CLASS, (
        f"Affected SOP Class UID (0000,0002) must be {tags.UPS_PUSH_SOP_CLASS} (PS3.4 CC.2.4.3): {event.text}"
    )
    _us(event, MESSAGE_ID, "Message ID")
    if COMMAND_FIELD in event.ds:
        assert _us(event, COMMAND_FIELD, "Command Field") == N_EVENT_REPORT_RQ, "Command Field must be N-EVENT-REPORT-RQ"
    assert event.vr(AFFECTED_SOP_INSTANCE_UID) == "UI", f"Affected SOP Instance UID must be UI: {event.text}"
    if uid is not None:
        assert event.uid == uid, f"Affected SOP Instance UID {event.uid!r} is not the workitem {uid}"
    kind = _us(event, EVENT_TYPE_ID, "Event Type ID")
    assert kind in EVENT_NAMES, f"Event Type ID {kind} is not one of PS3.4 Table CC.2.4-1"
    assert tags.TRANSACTION_UID not in event.text.upper(), f"an event carries the Transaction UID: {event.text}"
    if kind == STATE_REPORT:
        assert event.vr(tags.PROCEDURE_STEP_STATE) == "CS", f"Procedure Step State must be CS: {event.text}"
        assert event.state in STATES, f"Procedure Step State {event.state!r}"
        assert event.vr(tags.INPUT_READINESS_STATE) == "CS", f"Input Readiness State must be CS: {event.text}"
        assert event.readiness in READINESS, f"Input Readiness State {event.readiness!r}"
    elif kind == CANCEL_REQUESTED:
        assert event.vr(REQUESTING_AE) == "AE", f"Requesting AE (0074,1236) is type 1, VR AE: {event.text}"
        ae = event.requesting_ae
        assert isinstance(ae, str) and ae.strip() and len(ae) <= 16 and "\\" not in ae, f"Requesting AE {ae!r}"
    elif kind == PROGRESS_REPORT:
        assert event.vr(tags.PROGRESS_INFORMATION_SEQ) == "SQ", (
            f"Progress Report needs Procedure Step Progress Information Sequence (type 1): {event.text}"
        )
    elif kind == ASSIGNED:
        assert any(tag in event.ds for tag in (
            tags.SCHEDULED_STATION_NAME_SEQ, HUMAN_PERFORMER_CODE_SEQ, HUMAN_PERFORMER_ORGANIZATION,
        )), f"UPS Assigned carries none of its event information attributes: {event.text}"


def decimal(value: Any) -> Decimal | None:
    """A DS value (JSON number or string, F.2.3) as a Decimal, None when unparseable."""
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None


# --- one WebSocket ---------------------------------------------------------------------------
class Channel:
    """One open event channel (RAD-109) for ``aet``; a daemon thread collects its messages."""

    def __init__(self, url: str, aet: str) -> None:
        self.url = url
        self.aet = aet
        self.problems: list[str] = []  # frames that are not one DICOM JSON object in a text frame
        self.close_reason: str | None = None
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._ws: Any = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ups-channel-{aet}", daemon=True)
        self._thread.start()
        if not self._ready.wait(WAIT + 1):
            raise AssertionError(f"WebSocket handshake with {url} did not finish within {WAIT:.0f} s")
        if self._failure is not None:
            raise AssertionError(f"could not open the event channel {url}: {self._failure!r}")

    def _run(self) -> None:
        reason = "closed"
        try:
            with connect(self.url, open_timeout=WAIT, close_timeout=1, max_size=2**24) as ws:
                self._ws = ws
                self._ready.set()
                for frame in ws:
                    self._accept(frame)
        except ConnectionClosed as exc:
            reason = f"closed: {exc}"
        except Exception as exc:  # noqa: BLE001 - reported to the test, never swallowed silently
            if not self._ready.is_set():
                self._failure = exc
            reason = f"failed: {exc!r}"
        finally:
            with self._cond:
                self.close_reason = reason
                self._cond.notify_all()
            self._ready.set()

    def _accept(self, frame: str | bytes) -> None:
        with self._cond:
            if isinstance(frame, bytes):
                self.problems.append(f"binary frame (PS3.18 8.10.5 sends text frames, opcode %x1): {frame[:80]!r}")
            else:
                try:
                    ds = json.loads(frame)
                except json.JSONDecodeError as exc:
                    self.problems.append(f"frame is not JSON ({exc}): {frame[:200]!r}")
                else:
                    if isinstance(ds, dict):
                        self._events.append(Event(ds, frame, len(self._events), time.monotonic()))
                    else:
                        self.problems.append(f"frame is not one DICOM JSON object: {frame[:200]!r}")
            self._cond.notify_all()

    # --- reading -------------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        """True while the connection has not been closed (by either side)."""
        with self._cond:
            return self.close_reason is None

    def mark(self) -> int:
        """Index of the next message: pass as ``since`` to look only at what arrives after now."""
        with self._cond:
            return len(self._events)

    def events(self, match: Callable[[Event], bool] | None = None, since: int = 0) -> list[Event]:
        """The messages received so far (from index ``since``) that ``match``."""
        with self._cond:
            return [event for event in self._events[since:] if match is None or match(event)]

    def describe(self, since: int = 0) -> str:
        """What the channel received, for assertion messages."""
        got = self.events(since=since)
        shown = ", ".join(str(event) for event in got[-25:])
        more = f" (last 25 of {len(got)})" if len(got) > 25 else ""
        state = "" if self.open else f"; channel {self.close_reason}"
        return f"AE {self.aet} received{more}: [{shown}]{state}"

    def wait(
        self, match: Callable[[Event], bool], what: str, *, since: int = 0, count: int = 1,
        timeout: float = WAIT,
    ) -> list[Event]:
        """Wait until ``count`` messages from index ``since`` match; return them (in arrival order)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                assert not self.problems, f"malformed event frames on {self.url}: {self.problems}"
                found = [event for event in self._events[since:] if match(event)]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.close_reason is not None:
                    break
                self._cond.wait(remaining)
        raise AssertionError(f"no {what} within {timeout:.0f} s ({len(found)} of {count}); {self.describe(since)}")

    def wait_for(
        self, uid: str, type_: int, *, state: str | None = None, since: int = 0, count: int = 1,
        what: str | None = None,
    ) -> Event:
        """Wait for an event of ``type_`` about ``uid`` (and in ``state``); return the last one."""
        label = what or f"{EVENT_NAMES.get(type_, type_)}{' ' + state if state else ''} for {uid}"
        return self.wait(is_event(uid, type_, state), label, since=since, count=count)[-1]

    def none(self, match: Callable[[Event], bool], what: str, *, since: int = 0, quiet: float = QUIET) -> None:
        """After ``quiet`` seconds, assert no message from index ``since`` matches.

        Call it only after waiting for a sentinel event that the server sends after the
        action that must not produce ``what`` — otherwise the check would be vacuous.
        """
        time.sleep(quiet)
        assert not self.problems, f"malformed event frames on {self.url}: {self.problems}"
        found = self.events(match, since)
        assert not found, f"unexpected {what}: {[str(event) for event in found]}; {self.describe(since)}"

    def close(self) -> None:
        """Close the WebSocket (client side) and let the reader thread end."""
        try:
            if self._ws is not None:
                self._ws.close()
        finally:
            self._thread.join(timeout=2)


# --- subscription requests -------------------------------------------------------------------
def channel_url(response: httpx.Response) -> str:
    """The WebSocket URL a 201 Subscribe advertises: Content-Location (2024c), else Location (dcm4chee)."""
    url = response.headers.get("content-location") or response.headers.get("location")
    assert url, f"Subscribe 201 must name the event channel in Content-Location (PS3.18 11.10.3.2): {expect.describe(response)}"
    scheme = httpx.URL(url).scheme
    assert scheme in ("ws", "wss"), f"channel URL {url!r} must be a ws:// or wss:// URL: {expect.describe(response)}"
    return url


class Subscriptions:
    """Subscription requests and channels of one test; undone at teardown (``close``)."""

    def __init__(self, ups: Ups) -> None:
        self.ups = ups
        self.urls: dict[str, str] = {}
        self._made: set[tuple[str, str]] = set()
        self._channels: list[Channel] = []

    @staticmethod
    def aet(prefix: str = "AIWC") -> str:
        """A fresh AE title (VR AE, ≤ 16 characters) unique to the calling test."""
        return token(prefix, 16 - len(prefix))

    def target_url(self, target: str, aet: str, suffix: str = "") -> str:
        """``{s}/workitems/{target}/subscribers/{aet}{suffix}`` with the AE title percent-encoded."""
        return self.ups.url(f"/{target}/subscribers/{quote(aet, safe='')}{suffix}")

    # --- the three transactions (PS3.18 11.10–11.12) --------------------------------------------
    def subscribe(self, target: str, aet: str, *, lock: bool | str | None = None, query: str = "") -> httpx.Response:
        """POST …/subscribers/{aet}[?deletionlock=…][&query]; no body (Content-Length: 0)."""
        params = []
        if lock is not None:
            params.append(f"deletionlock={str(lock).lower() if isinstance(lock, bool) else lock}")
        if query:
            params.append(query)
        url = self.target_url(target, aet) + (f"?{'&'.join(params)}" if params else "")
        self._made.add((target, aet))
        return self.ups.send("POST", url, b"", content_type=None)

    def subscribe_ok(self, target: str, aet: str, *, lock: bool | None = None, query: str = "") -> httpx.Response:
        """Subscribe and assert 201 with a ws(s) channel URL; a lock may be refused only with
        the 'Deletion Lock not granted.' Warning (B301)."""
        response = self.subscribe(target, aet, lock=lock, query=query)
        expect.status(response, 201)
        channel_url(response)
        expect.optional_warning(response, LOCK_NOT_GRANTED, about="lock")
        if not lock:
            expect.no_warning(response, LOCK_NOT_GRANTED)
        return response

    def unsubscribe(self, target: str, aet: str) -> httpx.Response:
        """DELETE …/subscribers/{aet} (PS3.18 11.11)."""
        return self.ups.send("DELETE", self.target_url(target, aet), content_type=None)

    def suspend(self, target: str, aet: str) -> httpx.Response:
        """POST …/subscribers/{aet}/suspend (PS3.18 11.12); no body."""
        return self.ups.send("POST", self.target_url(target, aet, "/suspend"), b"", content_type=None)

    # --- channels ----------------------------------------------------------------------------------
    def learn_url(self, aet: str) -> str:
        """The channel URL of ``aet``, from a Subscribe to a scratch workitem that is undone at once."""
        if aet not in self.urls:
            scratch = self.ups.create_ok(new_workitem())
            response = self.subscribe(scratch, aet)
            expect.status(response, 201)
            self.urls[aet] = channel_url(response)
            expect.status(self.unsubscribe(scratch, aet), 200)
            self._made.discard((scratch, aet))
        return self.urls[aet]

    def channel(self, aet: str) -> Channel:
        """Open an event channel for ``aet`` at the URL Subscribe advertises for it."""
        opened = Channel(self.learn_url(aet), aet)
        self._channels.append(opened)
        return opened

    def close(self) -> None:
        """Teardown: close the channels, end every subscription this test made (statuses ignored)."""
        for opened in self._channels:
            try:
                opened.close()
            except Exception:  # noqa: BLE001, S110 - teardown must reach the unsubscribes
                pass
        aets = {aet for _, aet in self._made}
        for target, aet in sorted(self._made):
            if target not in (GLOBAL, FILTERED):
                self.unsubscribe(target, aet)
        for aet in sorted(aets):  # a global Unsubscribe also releases every lock of the AE
            self.unsubscribe(FILTERED, aet)
            self.unsubscribe(GLOBAL, aet)


# --- building blocks of the event tests ----------------------------------------------------------
PERFORMER_CODE = ("AIWCONF_AI", CONFORMANCE_SCHEME, "Conformance AI performer")
PERFORMER_ORGANIZATION = "AIW Conformance Lab"


def watch(subs: Subscriptions, uid: str, *, lock: bool | None = None, aet: str | None = None) -> Channel:
    """Open a channel for a fresh AE, subscribe it to ``uid`` and wait for the initial State Report."""
    aet = aet or subs.aet()
    channel = subs.channel(aet)
    subs.subscribe_ok(uid, aet, lock=lock)
    channel.wait_for(uid, STATE_REPORT, what=f"initial State Report for {uid}")
    return channel


def station() -> Dataset:
    """Scheduled Station Name Code Sequence with one code (a UPS Assigned trigger)."""
    return {tags.SCHEDULED_STATION_NAME_SEQ: sq(code(*STATION_CODE))}


def performers() -> Dataset:
    """Scheduled Human Performers Sequence with one performer (a UPS Assigned trigger)."""
    return {tags.SCHEDULED_HUMAN_PERFORMERS_SEQ: sq({
        HUMAN_PERFORMER_CODE_SEQ: sq(code(*PERFORMER_CODE)),
        HUMAN_PERFORMER_NAME: pn("PERFORMER^CONFORMANCE"),
        HUMAN_PERFORMER_ORGANIZATION: elem("LO", PERFORMER_ORGANIZATION),
    })}


ASSIGNMENTS = {"station": station, "performer": performers}


def assigned_to(what: str) -> Callable[[Event], bool]:
    """Predicate on a UPS Assigned event: it carries the station code, or the performer's code and organization."""

    def match(event: Event) -> bool:
        if what == "station":
            return STATION_CODE[0] in code_values(event.ds, tags.SCHEDULED_STATION_NAME_SEQ)
        return (PERFORMER_CODE[0] in code_values(event.ds, HUMAN_PERFORMER_CODE_SEQ)
                and first(event.ds, HUMAN_PERFORMER_ORGANIZATION) == PERFORMER_ORGANIZATION)

    return match


# --- workitem changes that make events ---------------------------------------------------------
def set_readiness(ups: Ups, uid: str, readiness: str, tuid: str | None = None) -> None:
    """Update Input Readiness State (a State Report trigger, PS3.4 CC.2.4.3)."""
    ups.update_ok(uid, {tags.INPUT_READINESS_STATE: elem("CS", readiness)}, tuid)


def assert_order(channel: Channel, uid: str, expected: Iterable[str], since: int = 0) -> None:
    """The State Reports of ``uid`` among ``expected`` states came in exactly that order
    (PS3.4 CC.2.4.3: events of one workitem in order; a repeat of the same report is tolerated)."""
    wanted = list(expected)
    seen = [event.state for event in channel.events(is_event(uid, STATE_REPORT), since)]
    relevant = [state for state in seen if state in wanted]
    collapsed = [state for i, state in enumerate(relevant) if i == 0 or relevant[i - 1] != state]
    assert collapsed == wanted, f"State Reports of {uid} came as {seen}, expected {wanted} in that order"
