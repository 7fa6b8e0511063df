"""The Task Manager's workitem operations: the one place every change of a workitem passes.

Routes parse HTTP and call these; each operation validates with ``upsrs.validation``, asks
``upsrs.states.decide`` what the standard says, builds the new dataset and its events, and
commits them together (``WorkitemStore.commit``). A lost compare-and-set re-reads and
decides again, so concurrent requests serialise exactly as the state table requires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from upsrs import datetimes
from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs import states, validation
from upsrs import vr as vrs
from upsrs.errors import DatasetError, Problem
from upsrs.matching import Matcher, Query, default_return_tags, project
from upsrs.uids import UPS_PUSH_SOP_CLASS, WELL_KNOWN_SUBSCRIPTION_UIDS, new_uid

from ups_server import indexes
from ups_server.querycache import QueryCache
from ups_server.settings import ServerSettings
from ups_server.store import (AlreadyExists, Event, NotFound, Record, StaleSubscriptions, VersionConflict,
                              WorkitemStore)
from ups_server.subscriptions import Subscriptions

SOP_CLASS_UID = 0x00080016
SOP_INSTANCE_UID = 0x00080018
TRANSACTION_UID = 0x00081195
PROCEDURE_STEP_STATE = 0x00741000
MODIFICATION_DATETIME = 0x00404010
WORKLIST_LABEL = 0x00741202
INPUT_READINESS_STATE = 0x00404041
PROGRESS_INFO_SEQ = 0x00741002
CANCELLATION_DATETIME = 0x00404052
REASON_FOR_CANCELLATION = 0x00741238
DISCONTINUATION_REASON_SEQ = 0x0074100E
COMMUNICATIONS_URI_SEQ = 0x00741008
CONTACT_URI = 0x0074100A
CONTACT_DISPLAY_NAME = 0x0074100C
DEFAULT_DISCONTINUATION = {  # (110513, DCM, "Discontinued for unspecified reason"), CID 9300
    "00080100": dj.element("SH", "110513"),
    "00080102": dj.element("SH", "DCM"),
    "00080104": dj.element("LO", "Discontinued for unspecified reason"),
}
CANCEL_REQUEST_TAGS = (REASON_FOR_CANCELLATION, DISCONTINUATION_REASON_SEQ, CONTACT_URI, CONTACT_DISPLAY_NAME)
MAX_ATTEMPTS = 20
DEFAULT_PROJECTION = Query([], set())
KEPT = "the workitem changed meanwhile: its performer keeps it"  # what a search returns without includefield


class UpsFailure(Exception):
    """A refused request: the transaction, its DIMSE status, and a precise detail."""

    def __init__(self, transaction: str, status: str, detail: str = "", problems: list[Problem] | None = None):
        self.transaction, self.status, self.detail = transaction, status, detail
        self.problems = problems or []
        super().__init__(f"{transaction} {status}: {detail}")

    @classmethod
    def invalid(cls, transaction: str, error: DatasetError) -> "UpsFailure":
        return cls(transaction, error.status, str(error), error.problems)


@dataclass
class Reply:
    transaction: str
    status: str = "0000"
    body: bytes | None = None
    uid: str = ""
    warnings: list[str] = field(default_factory=list)  # extra Warning texts (search paging ...)
    detail: str = ""


@dataclass
class Plan:
    """A change decided on: the new dataset, state, Transaction UID, its events, and the
    reply to give once it is committed."""

    doc: dj.Dataset
    state: str
    tuid: str
    events: list[tuple[int, dj.Dataset]]
    reply: Reply
    same_index: bool = False  # no indexed attribute changed


def _dataset_error(transaction: str, problems: list[Problem]) -> UpsFailure:
    return UpsFailure.invalid(transaction, DatasetError(problems))


class WorkitemService:
    def __init__(self, store: WorkitemStore, settings: ServerSettings, subs: "Subscriptions"):
        self.store = store
        self.settings = settings
        self.subs = subs
        self.tz = datetimes.parse_offset(settings.timezone_offset)
        self.queries = QueryCache(self.tz)

    # ---------------------------------------------------------------- helpers
    def _now(self) -> str:
        return datetimes.dt_now(self.tz)

    async def read(self, transaction: str, uid: str) -> Record:
        """The stored workitem, or the 404 / 410 failure for ``transaction``."""
        rec = await self.store.get(uid)
        if rec is None:
            if await self.store.was_purged(uid):
                raise UpsFailure(transaction, "gone", f"Workitem {uid} was deleted after its retention period")
            raise UpsFailure(transaction, "C307", f"no Workitem {uid} is managed here")
        return rec

    async def _commit(self, uid: str, expected: Record | None, ds: dj.Dataset, state: str, tuid: str,
                      events: list[tuple[int, dj.Dataset]], subscribers: dict[str, str] | None = None,
                      subver: bytes | None | str = "*", same_index: bool = False) -> None:
        """``same_index``: the change touched no indexed attribute (keep the index set)."""
        ds[dj.key(MODIFICATION_DATETIME)] = dj.element("DT", self._now())
        final_at = time.time() if state in states.FINAL_STATES and (expected is None or expected.state != state) else None
        await self.store.commit(
            uid, expected, dj.dumps(ds), dj.dumps(project(ds, DEFAULT_PROJECTION)), state, tuid,
            set(expected.index) if same_index and expected is not None else indexes.index_keys(self.store.prefix, ds),
            indexes.start_score(ds, self.tz), final_at,
            [Event(t, dj.dumps(info)) for t, info in events], subscribers, subver,
        )

    async def _change(self, transaction: str, uid: str, plan: Callable[[Record], "Plan | Reply"]) -> Reply:
        """Read, decide (``plan``), commit; again if another request committed in between.
        ``plan`` returns the change to make, or a Reply when nothing is to be written."""
        for _ in range(MAX_ATTEMPTS):
            rec = await self.read(transaction, uid)
            planned = plan(rec)
            if isinstance(planned, Reply):
                return planned
            try:
                await self._commit(uid, rec, planned.doc, planned.state, planned.tuid, planned.events,
                                   same_index=planned.same_index)
            except (VersionConflict, NotFound):
                continue
            return planned.reply
        raise UpsFailure(transaction, "busy", f"Workitem {uid} changed {MAX_ATTEMPTS} times during this request")

    @staticmethod
    def _check_payload_elements(transaction: str, ds: dj.Dataset) -> None:
        problems: list[Problem] = []
        validation.check_structure(ds, problems)
        if problems:
            raise _dataset_error(transaction, problems)

    # ---------------------------------------------------------------- create
    async def create(self, uid_param: str | None, ds: dj.Dataset) -> Reply:
        body_uid = dj.first(ds, SOP_INSTANCE_UID)
        if uid_param and body_uid and uid_param != body_uid:
            raise UpsFailure("create", "0106", f"the Workitem UID in the URL ({uid_param}) and SOP Instance UID "
                                               f"(0008,0018) in the dataset ({body_uid}) differ")
        uid = uid_param or body_uid or new_uid()
        msg = vrs.check_value("UI", uid) if isinstance(uid, str) else "not a string"
        if msg:
            raise UpsFailure("create", "0106", f"Workitem UID: {msg}")
        if uid in WELL_KNOWN_SUBSCRIPTION_UIDS:
            raise UpsFailure("create", "0111", f"{uid} is a well-known subscription UID, not a Workitem UID")
        ds.pop(dj.key(SOP_INSTANCE_UID), None)
        tuid_el = ds.pop(dj.key(TRANSACTION_UID), None)
        if tuid_el is not None and dj.has_value(tuid_el):
            raise UpsFailure("create", "0106", "Transaction UID (0008,1195) must be empty in a new Workitem")
        state = dj.first(ds, PROCEDURE_STEP_STATE)
        if state is not None and state != states.SCHEDULED and not isinstance(state, dict):
            raise UpsFailure("create", "C309", f"Procedure Step State (0074,1000) is {state!r}; a new Workitem shall be SCHEDULED")
        sop_class = dj.first(ds, SOP_CLASS_UID)
        if sop_class is not None and sop_class != UPS_PUSH_SOP_CLASS:
            raise UpsFailure("create", "0106", f"SOP Class UID (0008,0016) {sop_class} is not UPS Push ({UPS_PUSH_SOP_CLASS})")
        ds.pop(dj.key(SOP_CLASS_UID), None)
        # The lock lives beside the workitem, never in it; absent or empty are both fine. The
        # table makes it type 2, so it is checked present and empty, then taken out again.
        ds[dj.key(TRANSACTION_UID)] = {"vr": "UI"}
        outcome = validation.check(ds, "create")
        if outcome.problems:
            raise _dataset_error("create", outcome.problems)
        ds.pop(dj.key(TRANSACTION_UID), None)
        modified = bool(outcome.added) or dj.has_value(ds.get(dj.key(MODIFICATION_DATETIME)))
        if not dj.has_value(ds.get(dj.key(WORKLIST_LABEL))):
            dj.set_value(ds, WORKLIST_LABEL, "LO", self.settings.default_worklist_label)
            modified = True
        dj.set_value(ds, SOP_CLASS_UID, "UI", UPS_PUSH_SOP_CLASS)
        dj.set_value(ds, SOP_INSTANCE_UID, "UI", uid)
        events: list[tuple[int, dj.Dataset]] = [(ev.STATE_REPORT, ev.state_report(ds))]
        events += [(ev.ASSIGNED, info) for info in ev.assigned(ds)]
        refresh = False
        for _ in range(MAX_ATTEMPTS):
            # the filtered worklist subscriptions it matches, checked current by the commit
            subver, subscribers = await self.subs.for_new_workitem(ds, refresh)
            try:
                await self._commit(uid, None, ds, states.SCHEDULED, "", events, subscribers, subver)
                break
            except StaleSubscriptions:
                refresh = True
            except AlreadyExists:
                raise UpsFailure("create", "0111", f"a Workitem with UID {uid} already exists") from None
        else:
            raise UpsFailure("create", "busy", "subscriptions kept changing during this request")
        return Reply("create", "B300" if modified else "0000", uid=uid,
                     detail="; ".join(f"{p}: added empty (type 2)" for p in outcome.added))

    # ---------------------------------------------------------------- retrieve
    async def retrieve(self, uid: str) -> Reply:
        doc = await self.store.get_doc(uid)
        if doc is None:
            await self.read("retrieve", uid)  # raises 404 or 410
        return Reply("retrieve", body=b"[" + doc + b"]", uid=uid)  # type: ignore[operator]

    # ---------------------------------------------------------------- update
    async def update(self, uid: str, tuid_param: str | None, ds: dj.Dataset) -> Reply:
        tuid_el = ds.pop(dj.key(TRANSACTION_UID), None)
        tuid_ds = None
        if isinstance(tuid_el, dict) and isinstance(tuid_el.get("Value"), list) and tuid_el["Value"]:
            tuid_ds = tuid_el["Value"][0]
            if not isinstance(tuid_ds, str) or vrs.check_value("UI", tuid_ds):
                raise UpsFailure("update", "0106", "Transaction UID (0008,1195) is not a valid UID")
        if tuid_param and tuid_ds and tuid_param != tuid_ds:
            raise UpsFailure("update", "0106", "the Transaction UID in the query and in (0008,1195) of the dataset differ")
        given = tuid_param or tuid_ds
        coerced = False
        if dj.key(MODIFICATION_DATETIME) in ds:
            ds.pop(dj.key(MODIFICATION_DATETIME))
            coerced = True  # the SCP stamps it (N-SET -/1)
        outcome = validation.check(ds, "set")
        if outcome.problems:
            raise _dataset_error("update", outcome.problems)
        touches_no_index = not (indexes.INDEXED_KEYS & ds.keys())

        def plan(rec: Record) -> Plan:
            decision = states.decide("update", rec.state, given, rec.tuid)
            if not decision.update:
                raise UpsFailure("update", decision.status)
            old = rec.dataset()
            new = {**old, **ds}
            events: list[tuple[int, dj.Dataset]] = []
            if dj.first(old, INPUT_READINESS_STATE) != dj.first(new, INPUT_READINESS_STATE):
                events.append((ev.STATE_REPORT, ev.state_report(new)))
            if ev.assignment_fingerprint(old) != ev.assignment_fingerprint(new):
                events += [(ev.ASSIGNED, info) for info in ev.assigned(new)]
            if ev.progress_fingerprint(old) != ev.progress_fingerprint(new):
                events.append((ev.PROGRESS_REPORT, ev.progress_report(new)))
            return Plan(new, rec.state, rec.tuid, events, Reply("update", "B305" if coerced else "0000", uid=uid),
                        same_index=touches_no_index)

        return await self._change("update", uid, plan)

    # ---------------------------------------------------------------- change state
    async def change_state(self, uid: str, ds: dj.Dataset) -> Reply:
        self._check_payload_elements("change-state", ds)
        target = dj.first(ds, PROCEDURE_STEP_STATE)
        if target is None:
            raise UpsFailure("change-state", "0120", "Procedure Step State (0074,1000) is required in the request")
        if target not in states.STATES:
            raise UpsFailure("change-state", "0106", f"Procedure Step State (0074,1000) {target!r} is not a UPS state")
        given = dj.first(ds, TRANSACTION_UID)
        def plan(rec: Record) -> Plan | Reply:
            decision = states.decide(target, rec.state, given, rec.tuid)
            if decision.status in ("B304", "B306"):
                return Reply("change-state", decision.status, uid=uid)
            if not decision.path:
                raise UpsFailure("change-state", decision.status)
            doc = rec.dataset()
            final = decision.path[-1]
            if final == states.CANCELED:
                self._fill_cancellation(doc, {})
            if final in states.FINAL_STATES:
                problems = validation.final_state_problems(doc, final)
                if problems:
                    raise UpsFailure("change-state", "C304", "; ".join(map(str, problems)), problems)
            events = self._walk(doc, decision.path)
            return Plan(doc, final, given, events, Reply("change-state", uid=uid))

        return await self._change("change-state", uid, plan)

    @staticmethod
    def _walk(doc: dj.Dataset, path: tuple[str, ...]) -> list[tuple[int, dj.Dataset]]:
        """Move ``doc`` through the states of ``path``: one State Report per step."""
        events = []
        for step in path:
            dj.set_value(doc, PROCEDURE_STEP_STATE, "CS", step)
            events.append((ev.STATE_REPORT, ev.state_report(doc)))
        return events

    def _fill_cancellation(self, doc: dj.Dataset, request: dj.Dataset) -> None:
        """Final-state X attributes for CANCELED (PS3.4 CC.2.5.1.3.2): the SCP fills the
        Cancellation DateTime and, if none was given, a discontinuation reason; a request's
        reason, code and contact are copied into the Progress Information Sequence."""
        progress = dj.items(doc, PROGRESS_INFO_SEQ)
        item = dict(progress[0]) if progress else {}
        for tag in (REASON_FOR_CANCELLATION, DISCONTINUATION_REASON_SEQ):
            if dj.has_value(request.get(dj.key(tag))):
                item[dj.key(tag)] = request[dj.key(tag)]
        if dj.has_value(request.get(dj.key(CONTACT_URI))):
            contact: dj.Dataset = {dj.key(CONTACT_URI): request[dj.key(CONTACT_URI)]}
            if dj.has_value(request.get(dj.key(CONTACT_DISPLAY_NAME))):
                contact[dj.key(CONTACT_DISPLAY_NAME)] = request[dj.key(CONTACT_DISPLAY_NAME)]
            item[dj.key(COMMUNICATIONS_URI_SEQ)] = dj.element("SQ", contact)
        if not dj.has_value(item.get(dj.key(CANCELLATION_DATETIME))):
            item[dj.key(CANCELLATION_DATETIME)] = dj.element("DT", self._now())
        if not dj.has_value(item.get(dj.key(DISCONTINUATION_REASON_SEQ))):
            item[dj.key(DISCONTINUATION_REASON_SEQ)] = dj.element("SQ", dict(DEFAULT_DISCONTINUATION))
        doc[dj.key(PROGRESS_INFO_SEQ)] = dj.element("SQ", item, *progress[1:])

    # ---------------------------------------------------------------- request cancellation
    async def request_cancel(self, uid: str, ds: dj.Dataset, requester: str) -> Reply:
        self._check_payload_elements("cancelrequest", ds)
        request = {dj.key(t): ds[dj.key(t)] for t in CANCEL_REQUEST_TAGS if dj.key(t) in ds}
        rec = await self.read("cancelrequest", uid)
        if rec.state == states.IN_PROGRESS and not await self.subs.subscribers(uid, rec.seq):
            # Nobody would hear a Cancel Requested event (spec digest sec. 7 row 6).
            raise UpsFailure("cancelrequest", "C312", f"no AE is subscribed to Workitem {uid}")
        def plan(rec: Record) -> Plan | Reply:
            decision = states.decide("cancelrequest", rec.state)
            if decision.status == "B304":
                return Reply("cancelrequest", "B304", uid=uid)
            doc = rec.dataset()
            done = Reply("cancelrequest", uid=uid)
            if decision.event == "cancel-requested":
                return Plan(doc, rec.state, rec.tuid, [(ev.CANCEL_REQUESTED, ev.cancel_requested(requester, request))], done)
            if decision.path:  # SCHEDULED: the SCP performs the cancellation itself (PS3.4 CC.2.2.3)
                self._fill_cancellation(doc, request)
                return Plan(doc, decision.path[-1], new_uid(), self._walk(doc, decision.path), done)
            raise UpsFailure("cancelrequest", decision.status)

        return await self._change("cancelrequest", uid, plan)

    # ---------------------------------------------------------------- SCP-initiated cancellation
    async def cancel_by_scp(self, uid: str, reason: str, code: dj.Dataset,
                            still_applies: Callable[[Record], bool]) -> bool:
        """Cancel an IN PROGRESS workitem on the Task Manager's own authority (its performer
        is gone), with ``reason`` and CID 9300 ``code`` in the Progress Information Sequence.
        ``still_applies`` is asked again on every read, so a performer that reports in
        between keeps its workitem. True when this call canceled it."""
        request = {dj.key(REASON_FOR_CANCELLATION): dj.element("ST", reason[:1024]),
                   dj.key(DISCONTINUATION_REASON_SEQ): dj.element("SQ", code)}

        def plan(rec: Record) -> Plan | Reply:
            if rec.state != states.IN_PROGRESS or not still_applies(rec):
                return Reply("change-state", uid=uid, detail=KEPT)
            doc = rec.dataset()
            self._fill_cancellation(doc, request)
            return Plan(doc, states.CANCELED, rec.tuid, self._walk(doc, (states.CANCELED,)),
                        Reply("change-state", uid=uid))

        return (await self._change("change-state", uid, plan)).detail != KEPT

    # ---------------------------------------------------------------- search
    async def search(self, query: Query) -> Reply:
        limit = min(query.limit if query.limit is not None else self.settings.search_max_results,
                    self.settings.search_max_results)
        matchers = query.matchers
        uid_m = next((m for m in matchers if m.tag == SOP_INSTANCE_UID and m.kind == "single"), None)
        docs: list[bytes]
        if uid_m is not None:
            uids = list(dict.fromkeys(uid_m.values))
            seqs = await self.store.get_seqs(uids)
            ordered = [u for s, u in sorted((s, u) for s, u in zip(seqs, uids) if s is not None)]
            fetched = [d for d in await self.store.get_docs(ordered) if d is not None]
            matched = [d for d in fetched if query.matches(dj.loads(d))]
            total, docs = len(matched), matched[query.offset: query.offset + limit]
        else:
            keys, start_range, residual = self._plan(matchers)
            if not residual:
                projected = self._default_projection(query)
                if projected or query.include_all:
                    # results as stored (the default projection, or whole): joined as Redis sends them
                    field = "proj" if projected else "doc"
                    total, n, body, page = await self.store.page_array(keys, start_range, query.offset, limit, field)
                    if body is not None:
                        return self._answer(body, n, total, query)
                    if projected:
                        missing = [u for u, d in page if d is None]  # stored before projections were kept
                        made = {u: dj.dumps(project(dj.loads(d), query))
                                for u, d in zip(missing, await self.store.get_docs(missing)) if d is not None}
                        page = [(u, d if d is not None else made.get(u)) for u, d in page]
                    return self._reply([d for _, d in page if d is not None], total, query, projected=True)
                total, page = await self.store.page(keys, start_range, query.offset, limit, "doc")
                docs = [d for _, d in page if d is not None]
            else:
                _, uids = await self.store.candidates(keys, start_range, 0, -1)
                total, docs = 0, []
                async for _, d in self._residual_matches(uids, residual):
                    if query.offset <= total < query.offset + limit:
                        docs.append(d)
                    total += 1
        return self._reply(docs, total, query)

    @staticmethod
    def _default_projection(query: Query) -> bool:
        always = default_return_tags()[0]
        return not query.include_all and not query.includefields and all(m.tag in always for m in query.matchers)

    @classmethod
    def _reply(cls, docs: list[bytes], total: int, query: Query, projected: bool = False) -> Reply:
        if not docs:
            return cls._answer(b"", 0, total, query)
        if query.include_all or projected:
            body = b"[" + b",".join(docs) + b"]"
        else:
            body = b"[" + b",".join(dj.dumps(project(dj.loads(d), query)) for d in docs) + b"]"
        return cls._answer(body, len(docs), total, query)

    @staticmethod
    def _answer(body: bytes, n: int, total: int, query: Query) -> Reply:
        """The reply to a search whose page (``n`` results, ``body`` their JSON array) is
        ready: the paging Warning when more match, 204 for none."""
        remaining = max(0, total - query.offset - n)
        warnings = [f"paging:{remaining}"] if remaining else []
        warnings += query.unsupported
        return Reply("search", body=body if n else None, warnings=warnings)

    def _plan(self, matchers: list[Matcher]) -> tuple[list[str], tuple[float | None, float | None] | None, list[Matcher]]:
        """Index keys, start-time range and the matchers the indexes do not answer exactly."""
        keys: list[str] = []
        residual: list[Matcher] = []
        start_range = None
        for m in matchers:
            if m.tag == indexes.START_DATETIME and m.kind == "range" and start_range is None:
                start_range = (m.low, m.high)
                continue
            key, exact = indexes.index_for(m, self.store.prefix)
            if key:
                keys.append(key)
            if not exact and m.kind != "universal":
                residual.append(m)
        return indexes.combine(keys, self.store.prefix), start_range, residual

    async def matching_uids(self, matchers: list[Matcher]) -> list[str]:
        """Every stored workitem the matchers match (a filtered subscription's existing set)."""
        keys, start_range, residual = self._plan(matchers)
        _, uids = await self.store.candidates(keys, start_range, 0, -1)
        if not residual:
            return uids
        return [uid async for uid, _ in self._residual_matches(uids, residual)]

    async def _residual_matches(self, uids: list[str], residual: list[Matcher]) -> AsyncIterator[tuple[str, bytes]]:
        """(uid, doc) of the candidates the matchers no index answered accept, in order;
        documents are read in batches."""
        for i in range(0, len(uids), 500):
            batch = uids[i:i + 500]
            for uid, d in zip(batch, await self.store.get_docs(batch)):
                if d is not None and all(m.matches(dj.loads(d)) for m in residual):
                    yield uid, d

    async def purge(self) -> list[str]:
        return await self.store.purge(self.settings.retention_seconds, self.settings.gone_seconds)

