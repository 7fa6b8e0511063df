"""Subscribe, Unsubscribe and Suspend (PS3.18 11.10–11.12, RAD-86) — what each request does.

Initial UPS State Reports go into the event stream addressed to the subscribing AE, after
its delivery cursor has been set, so an AE that opens its channel only after subscribing
still receives them (the standard only promises them to an AE whose channel was open).
"""

from __future__ import annotations

from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs.matching import Matcher
from upsrs.uids import FILTERED_GLOBAL_SUBSCRIPTION, GLOBAL_SUBSCRIPTION

from ups_server.cursors import Cursors
from ups_server.subscriptions import FilteredSub, GlobalSub, Subscriptions
from ups_server.workitems import Reply, UpsFailure, WorkitemService


class SubscriptionService:
    def __init__(self, workitems: WorkitemService, subs: Subscriptions, cursors: Cursors):
        self.workitems = workitems
        self.store = workitems.store
        self.subs = subs
        self.cursors = cursors

    async def _report(self, aet: str, uids: list[str]) -> None:
        """Initial State Reports of ``uids`` for ``aet`` (Table CC.2.3-2 '+report')."""
        await self.cursors.start_if_unset(aet)
        for i in range(0, len(uids), 500):
            batch = uids[i:i + 500]
            docs = await self.store.get_docs(batch)
            seqs = await self.store.get_seqs(batch)
            entries = [(uid, seq or 0, ev.STATE_REPORT, dj.dumps(ev.state_report(dj.loads(doc))), aet)
                       for uid, doc, seq in zip(batch, docs, seqs) if doc is not None]
            if entries:
                await self.store.append_events(entries)

    async def subscribe(self, target: str, aet: str, lock: bool, matchers: list[Matcher],
                        filter_pairs: list[tuple[str, str]]) -> Reply:
        if target == GLOBAL_SUBSCRIPTION:
            existing = await self.store.all_with_seq()
            event = "global-subscribe lock" if lock else "global-subscribe nolock"
            reports = await self.subs.apply_global(aet, event, existing, GlobalSub(lock))
        elif target == FILTERED_GLOBAL_SUBSCRIPTION:
            if not matchers:
                raise UpsFailure("subscribe", "0110", "a filtered worklist subscription needs matching keys "
                                                      "(filter=Attribute=value,... or Attribute=value parameters)")
            matching = set(await self.workitems.matching_uids(matchers))
            existing = await self.store.all_with_seq()
            event = "global-subscribe lock" if lock else "global-subscribe nolock"
            filtered = FilteredSub(lock, tuple(filter_pairs), tuple(matchers))
            reports = await self.subs.apply_global(aet, event, existing, None, filtered=filtered, only=matching)
        else:
            rec = await self.workitems.read("subscribe", target)
            step = await self.subs.subscribe_workitem(aet, target, rec.seq, lock)
            reports = [target] if step.report else []
        await self.cursors.start_if_unset(aet)
        await self._report(aet, reports)
        return Reply("subscribe", uid=target if target not in (GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION) else "")

    async def unsubscribe(self, target: str, aet: str) -> Reply:
        if target in (GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION):
            # Unsubscribing globally ends every subscription of the AE (Table CC.2.3-2).
            await self.subs.apply_global(aet, "global-unsubscribe", await self.store.all_with_seq(), None)
            await self.subs.remove_filtered(aet)
        else:
            rec = await self.workitems.read("unsubscribe", target)
            await self.subs.unsubscribe_workitem(aet, target, rec.seq)
        return Reply("unsubscribe", uid=target)

    async def suspend(self, target: str, aet: str) -> Reply:
        if target == FILTERED_GLOBAL_SUBSCRIPTION:
            if not await self.subs.remove_filtered(aet):
                raise UpsFailure("suspend", "not-subscribed", f"{aet} has no filtered worklist subscription")
            return Reply("suspend")
        if target != GLOBAL_SUBSCRIPTION:
            raise UpsFailure("suspend", "0110", "only a global or filtered worklist subscription can be suspended")
        current = await self.subs.global_record(aet)
        # a suspended record only keeps the existing workitems subscribed: after a suspend the
        # AE's global state is "none" (Table CC.2.3-2), so there is nothing left to suspend
        if current is None or current.suspended_seq is not None:
            raise UpsFailure("suspend", "not-subscribed", f"{aet} has no (active) global worklist subscription")
        upto = int(await self.store.redis.get(self.store.k_seq) or 0)
        await self.subs.apply_global(aet, "global-suspend", [], GlobalSub(current.lock, upto))
        return Reply("suspend")
