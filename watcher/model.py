"""The live model: every workitem the watcher knows, with its state history.

Three sources feed it, in any order and with repeats: event reports (live, replayed after a
reconnect, initial reports after subscribing), search results (the initial load and the
catch-up after every reconnect) and retrieved workitems (details, final results). The
model makes their union consistent:

* a workitem's state only moves forward (SCHEDULED < IN PROGRESS < COMPLETED/CANCELED), so
  a replayed or stale report can never move a row back or add a second transition;
* duplicate events (equal ``EventReport.key``) are recognised and dropped;
* the time of a transition is the earliest evidence of it: the time the event arrived, or
  the workitem's Modification DateTime when a dataset in that state says it was earlier
  (the server stamps every change; a replayed event arrives late but the stamp does not);
* a malformed event or dataset is logged and skipped; it never stops the watcher.

Consumers (web push, terminal) register a set that collects the UIDs of changed rows.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from upsrs import events as ev
from upsrs.eventclient import EventReport

from watcher import fields as f

log = logging.getLogger("aiw.watcher")

RANK = {"SCHEDULED": 0, "IN PROGRESS": 1, "COMPLETED": 2, "CANCELED": 2}
FINAL = ("COMPLETED", "CANCELED")
TIMELINE_MAX = 200
KEYS_MAX = 64
SOURCE_NOTE = {"initial": " (already so when first seen)", "search": " (found by search)", "retrieve": " (found on retrieve)"}
REPLAY_GAP = 2.0  # seconds: an event this much later than the server's stamp was replayed


@dataclass
class Transition:
    state: str
    at: float
    source: str  # "event" (arrived live), "initial" (first seen already in this state), "search", "retrieve"


@dataclass
class Row:
    uid: str
    order: int  # first-seen order: the table's "newest first"
    first_seen: float
    state: str = ""
    history: list[Transition] = field(default_factory=list)
    timeline: deque = field(default_factory=lambda: deque(maxlen=TIMELINE_MAX))  # (at, kind, text)
    info: dict[str, Any] = field(default_factory=dict)  # fields.summary() of what we retrieved/searched
    progress: float | None = None
    progress_text: str = ""
    last_activity: float = 0.0  # last state change or progress: the "stuck" clock
    reason: str = ""  # discontinuation reason (CANCELED)
    cancel_request: dict[str, str] | None = None
    detailed: bool = False  # holds a searched or retrieved dataset (not only events)
    final_recorded: bool = False  # the final workitem was retrieved and recorded
    lock_released: bool = False
    event_lag: float | None = None  # final State Report arrival - server's Modification DateTime
    version: int = 0
    keys: deque = field(default_factory=lambda: deque(maxlen=KEYS_MAX))

    @property
    def created(self) -> float:
        """When it was scheduled, as well as we know (else when we first saw it)."""
        for t in self.history:
            if t.state == "SCHEDULED":
                return t.at
        return self.first_seen

    @property
    def state_since(self) -> float:
        return self.history[-1].at if self.history else self.first_seen

    def entered(self, state: str) -> float | None:
        return next((t.at for t in self.history if t.state == state), None)

    @property
    def final_at(self) -> float | None:
        return self.entered(self.state) if self.state in FINAL else None

    def to_json(self) -> dict[str, Any]:
        """The row as the web page and the API show it."""
        i = self.info
        return {
            "uid": self.uid, "order": self.order, "state": self.state,
            "priority": i.get("priority", ""), "procedure": i.get("procedure", ""),
            "procedure_code": i.get("procedure_code", ""), "patient": i.get("patient", ""),
            "patient_id": i.get("patient_id", ""), "accession": i.get("accession", ""),
            "study_uid": i.get("study_uid", ""), "modality": i.get("modality", ""),
            "performer": i.get("performer", ""), "worklist": i.get("worklist", ""),
            "readiness": i.get("readiness", ""), "progress": self.progress, "progress_text": self.progress_text,
            "created": self.created, "state_since": self.state_since, "last_activity": self.last_activity,
            "reason": self.reason, "cancel_requested": self.cancel_request is not None,
        }

    def timeline_json(self) -> list[dict[str, Any]]:
        """State transitions (at their best-known times) and the other events, in time order."""
        states = [(t.at, "state", f"State {t.state}" + SOURCE_NOTE.get(t.source, ""))
                  for t in self.history]
        return [{"at": at, "kind": kind, "text": text}
                for at, kind, text in sorted(states + list(self.timeline), key=lambda x: x[0])]

    def detail_json(self) -> dict[str, Any]:
        d = self.to_json()
        d.update({
            "history": [{"state": t.state, "at": t.at, "source": t.source} for t in self.history],
            "timeline": self.timeline_json(),
            "inputs": self.info.get("inputs", []), "outputs": self.info.get("outputs", []),
            "cancel_request": self.cancel_request, "final_recorded": self.final_recorded,
            "lock_released": self.lock_released, "event_lag": self.event_lag,
            "scheduled_start": self.info.get("scheduled_start"),
        })
        return d


class Model:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.rows: dict[str, Row] = {}
        self.clock = clock
        self.version = 0
        self.skipped = 0  # malformed events/datasets logged and skipped
        self.duplicates = 0  # replayed events recognised and dropped
        self.events = 0
        self._order = 0
        self._consumers: list[set[str]] = []
        self.notes: deque = deque(maxlen=50)  # (at, text): server-wide happenings (SCP status)

    # ----------------------------------------------------------------- consumers
    def consumer(self) -> set[str]:
        """A set that collects the UIDs of rows changed from now on (the caller empties it)."""
        s: set[str] = set()
        self._consumers.append(s)
        return s

    def drop_consumer(self, s: set[str]) -> None:
        if s in self._consumers:
            self._consumers.remove(s)

    def _changed(self, row: Row) -> None:
        self.version += 1
        row.version = self.version
        for s in self._consumers:
            s.add(row.uid)

    # ----------------------------------------------------------------- rows
    def row(self, uid: str, now: float | None = None) -> Row:
        r = self.rows.get(uid)
        if r is None:
            self._order += 1
            r = self.rows[uid] = Row(uid, self._order, now if now is not None else self.clock())
        return r

    def _move(self, row: Row, state: str, at: float, source: str) -> bool:
        """Move ``row`` forward to ``state``; a repeat or a step back changes nothing."""
        if state not in RANK:
            raise ValueError(f"unknown Procedure Step State {state!r}")
        if row.state and RANK[state] <= RANK[row.state]:
            return False
        if not row.state and state != "SCHEDULED" and source == "event":
            source = "initial"  # first seen already past SCHEDULED: the time is when we saw it
        row.state = state
        row.history.append(Transition(state, at, source))
        row.last_activity = max(row.last_activity, at)
        return True

    # ----------------------------------------------------------------- events
    def apply(self, event: EventReport, now: float | None = None) -> Row | None:
        """Apply one event report; the changed row, or None (duplicate, no change, skipped)."""
        now = now if now is not None else self.clock()
        self.events += 1
        try:
            return self._apply(event, now)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.skipped += 1
            log.warning("malformed event skipped: %s (%s for %s)", exc, event.name, event.uid)
            return None

    def _apply(self, e: EventReport, now: float) -> Row | None:
        if e.type == ev.SCP_STATUS_CHANGE:
            self.notes.append((now, f"Task Manager {e.scp_status or 'status change'}"
                                    + (f" ({e.value(0x00741244)})" if e.value(0x00741244) else "")))
            return None
        if e.type not in (ev.STATE_REPORT, ev.PROGRESS_REPORT, ev.CANCEL_REQUESTED, ev.ASSIGNED):
            raise ValueError(f"unknown event type {e.type}")
        key = e.key
        known = self.rows.get(e.uid)
        if known is not None and key in known.keys:
            self.duplicates += 1
            return None
        if e.type == ev.STATE_REPORT:
            state = e.state
            if not isinstance(state, str):
                raise ValueError("a State Report without Procedure Step State")
            if state not in RANK:
                raise ValueError(f"unknown Procedure Step State {state!r}")
        row = self.row(e.uid, now)
        row.keys.append(key)
        changed = False
        if e.type == ev.STATE_REPORT:
            changed = self._move(row, e.state, now, "event")  # type: ignore[arg-type]
            readiness = e.readiness
            if isinstance(readiness, str) and readiness != row.info.get("readiness"):
                row.info["readiness"] = readiness
                changed = True
            if e.state == "CANCELED":
                why = f.reason(e.dataset)
                if why and why != row.reason:
                    row.reason = why
                    changed = True
        elif e.type == ev.PROGRESS_REPORT:
            pct, text, _ = f.progress(e.dataset)
            items = f.dj.items(e.dataset, f.PROGRESS_SEQ)
            raw = f.dj.first(items[0], f.PROGRESS) if items else None
            if raw is not None and pct is None:
                raise ValueError(f"Procedure Step Progress {raw!r} is not a percentage")
            if (pct, text) != (row.progress, row.progress_text):
                row.progress, row.progress_text = pct, text
                row.last_activity = now
                row.timeline.append((now, "progress", f"Progress {fmt_pct(pct)}" + (f" — {text}" if text else "")))
                changed = True
        elif e.type == ev.CANCEL_REQUESTED:
            row.cancel_request = {"requester": f.text(e.requesting_ae), "reason": f.reason(e.dataset),
                                  "contact": f.text(e.value(0x0074100C) or e.value(0x0074100A)), "at": str(now)}
            row.timeline.append((now, "cancel", f"Cancel requested by {row.cancel_request['requester'] or 'unknown AE'}"
                                                + (f": {row.cancel_request['reason']}" if row.cancel_request["reason"] else "")))
            changed = True
        elif e.type == ev.ASSIGNED:
            name = f.performer(e.dataset)
            if name and name != row.info.get("performer"):
                row.info["performer"] = name
                row.timeline.append((now, "assigned", f"Assigned to {name}"))
                changed = True
        if changed:
            self._changed(row)
            return row
        return None

    # ----------------------------------------------------------------- datasets
    def merge(self, ds: dict[str, Any], source: str, now: float | None = None, uid: str | None = None) -> Row | None:
        """Merge a searched (``source="search"``) or retrieved (``"retrieve"``) workitem."""
        now = now if now is not None else self.clock()
        try:
            uid = uid or f.text(f.dj.first(ds, 0x00080018))
            if not uid:
                raise ValueError("a workitem without SOP Instance UID (0008,0018)")
            state = f.dj.first(ds, f.STATE)
            if state is not None and state not in RANK:
                raise ValueError(f"unknown Procedure Step State {state!r}")
            info = f.summary(ds)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.skipped += 1
            log.warning("malformed workitem skipped: %s", exc)
            return None
        row = self.row(uid, now)
        modified = f.dt_epoch(f.dj.first(ds, f.MODIFIED_DT))
        stamp = min(now, modified) if modified is not None else now
        lag = None
        if state:
            if not self._move(row, state, stamp, source) and row.state == state and modified is not None:
                last = row.history[-1]
                if last.source == "event" and modified <= last.at:
                    lag = last.at - modified
                # already in this state: the server's stamp tells when it really got there
                # (initial reports and replays arrive late; a live event within 2 s is kept
                # as received, so a small clock offset never reorders a live history)
                if modified < last.at - REPLAY_GAP or (last.source != "event" and modified < last.at):
                    last.at = modified
        for k, v in info.items():
            row.info[k] = v
        pct, text, why = f.progress(ds)
        if f.dj.key(f.PROGRESS_SEQ) in ds and (pct, text) != (row.progress, row.progress_text) and \
                (pct is not None or text):
            row.progress, row.progress_text = pct, text
        if why and row.state == "CANCELED":
            row.reason = why
        row.detailed = True
        if source == "retrieve" and row.state in FINAL and not row.final_recorded:
            row.final_recorded = True
            row.event_lag = lag
            n = len(info.get("outputs", []))
            row.timeline.append((now, "final", f"Final workitem retrieved and recorded ({n} output series)"))
        self._changed(row)
        return row

    def mark_released(self, uid: str, now: float | None = None) -> None:
        row = self.rows.get(uid)
        if row is not None and not row.lock_released:
            row.lock_released = True
            row.timeline.append((now or self.clock(), "lock", "Deletion lock released"))
            self._changed(row)

    # ----------------------------------------------------------------- views
    def newest_first(self, rows: Iterable[Row] | None = None) -> list[Row]:
        return sorted(self.rows.values() if rows is None else rows, key=lambda r: r.order, reverse=True)

    def counts(self) -> dict[str, int]:
        out = {"SCHEDULED": 0, "IN PROGRESS": 0, "COMPLETED": 0, "CANCELED": 0}
        for r in self.rows.values():
            if r.state in out:
                out[r.state] += 1
        return out


def fmt_pct(pct: float | None) -> str:
    return "—" if pct is None else f"{pct:.0f}%"
