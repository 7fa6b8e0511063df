"""Stale claims: an IN PROGRESS workitem whose performer stopped reporting is canceled by
the Task Manager and rescheduled as a replacement workitem, so no task is ever stranded.

A workitem's last activity is the time of its last committed change (``commit.lua``
keeps the ``active`` sorted set). Performers keep their lease by updating the workitem (a
progress report, or the same progress again as a heartbeat). When a lease runs out:

1. the UID goes into a journal (``lease:pending``) first, so a crash between the next two
   steps is finished by the next scan;
2. the workitem is canceled — a compare-and-set on its version, so a performer that
   reports in between keeps it — with CID 9300 (110528, DCM, "Discontinued Procedure Step
   rescheduled") and a Reason For Cancellation naming the lease and the replacement;
3. a replacement SCHEDULED workitem is created with the attributes N-CREATE allows and a
   Replaced Procedure Step Sequence referencing the canceled one. Its UID is derived from
   the canceled UID, so doing step 3 twice cannot create two replacements.

After ``max_attempts`` workitems in one chain, the last is canceled with (110513, DCM,
"Discontinued for unspecified reason") and the reason says that no replacement was made.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from upsrs import dicomjson as dj
from upsrs import states, validation
from upsrs.uids import UPS_PUSH_SOP_CLASS

from ups_server import logs
from ups_server.workitems import PROCEDURE_STEP_STATE, SOP_INSTANCE_UID, UpsFailure, WorkitemService

REPLACED_STEP_SEQ = 0x00741224
REFERENCED_SOP_CLASS = 0x00081150
REFERENCED_SOP_INSTANCE = 0x00081155
RESCHEDULED = {"00080100": dj.element("SH", "110528"), "00080102": dj.element("SH", "DCM"),
               "00080104": dj.element("LO", "Discontinued Procedure Step rescheduled")}
GIVEN_UP = {"00080100": dj.element("SH", "110513"), "00080102": dj.element("SH", "DCM"),
            "00080104": dj.element("LO", "Discontinued for unspecified reason")}


def replacement_uid(uid: str) -> str:
    """The one UID the replacement of ``uid`` can have (PS3.5 B.2 UUID-derived)."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'aiw-replacement:' + uid).int}"


def replaced_uid(doc: dj.Dataset) -> str | None:
    """The workitem ``doc`` replaces, if any."""
    for item in dj.items(doc, REPLACED_STEP_SEQ):
        uid = dj.first(item, REFERENCED_SOP_INSTANCE)
        if uid:
            return str(uid)
    return None


def replacement_of(doc: dj.Dataset, uid: str) -> dj.Dataset:
    new = validation.creatable(doc)
    for tag in (SOP_INSTANCE_UID, PROCEDURE_STEP_STATE):
        new.pop(dj.key(tag), None)
    dj.set_value(new, PROCEDURE_STEP_STATE, "CS", states.SCHEDULED)
    new[dj.key(REPLACED_STEP_SEQ)] = dj.element("SQ", {
        dj.key(REFERENCED_SOP_CLASS): dj.element("UI", UPS_PUSH_SOP_CLASS),
        dj.key(REFERENCED_SOP_INSTANCE): dj.element("UI", uid),
    })
    return new


class LeaseWatcher:
    def __init__(self, workitems: WorkitemService, lease_seconds: float, max_attempts: int):
        self.workitems = workitems
        self.store = workitems.store
        self.lease = lease_seconds
        self.max_attempts = max(1, max_attempts)
        self.k_pending = f"{self.store.prefix}lease:pending"

    async def run(self, interval: float) -> None:
        while True:
            await self.scan()
            await asyncio.sleep(interval)

    async def scan(self) -> list[str]:
        """Expire every lease that ran out; finish any journaled expiry. Returns the UIDs
        of the replacements created."""
        created = []
        for uid in [u.decode() for u in await self.store.redis.smembers(self.k_pending)]:
            created += await self._finish(uid)
        for uid in await self.store.inactive_since(time.time() - self.lease):
            await self.store.redis.sadd(self.k_pending, uid)
            created += await self._finish(uid)
        return created

    async def _attempt(self, doc: dj.Dataset) -> int:
        """How many workitems the chain ending in ``doc`` holds (1 = an original)."""
        n, seen = 1, set()
        prev = replaced_uid(doc)
        while prev and prev not in seen and n <= self.max_attempts:
            seen.add(prev)
            n += 1
            rec = await self.store.get(prev)
            prev = replaced_uid(rec.dataset()) if rec else None
        return n

    async def _finish(self, uid: str) -> list[str]:
        rec = await self.store.get(uid)
        if rec is None:
            await self.store.redis.srem(self.k_pending, uid)
            return []
        doc = rec.dataset()
        attempt = await self._attempt(doc)
        again = attempt < self.max_attempts
        new_uid = replacement_uid(uid)
        if rec.state == states.IN_PROGRESS:
            last = await self.store.last_activity(uid)
            if last is None or last >= time.time() - self.lease:
                await self.store.redis.srem(self.k_pending, uid)
                return []
            idle = time.time() - (last or 0.0)
            reason = (f"The performer stopped reporting: no update for {idle:.0f} s (lease {self.lease:g} s). "
                      + (f"Rescheduled as workitem {new_uid} (attempt {attempt + 1} of {self.max_attempts})."
                         if again else f"Not rescheduled: {attempt} of {self.max_attempts} attempts used."))
            canceled = await self.workitems.cancel_by_scp(uid, reason, RESCHEDULED if again else GIVEN_UP,
                                                          lambda r: r.version == rec.version)
            if not canceled:
                # it changed meanwhile; the next scan looks again
                await self.store.redis.srem(self.k_pending, uid)
                return []
            logs.log.warning("lease expired", workitem=uid, idle_seconds=round(idle, 1), attempt=attempt,
                             replacement=new_uid if again else None)
        elif rec.state != states.CANCELED:
            await self.store.redis.srem(self.k_pending, uid)
            return []
        created = []
        if again and await self._was_rescheduled_by_us(uid):
            try:
                await self.workitems.create(new_uid, replacement_of(doc, uid))
                created.append(new_uid)
                logs.log.info("replacement created", workitem=new_uid, replaces=uid)
            except UpsFailure as exc:
                if exc.status != "0111":  # 0111 = it exists already: a previous scan made it
                    logs.log.error("replacement refused", workitem=uid, error=str(exc))
        await self.store.redis.srem(self.k_pending, uid)
        return created

    async def _was_rescheduled_by_us(self, uid: str) -> bool:
        """True when ``uid`` was canceled with our 'rescheduled' code (not by its performer)."""
        rec = await self.store.get(uid)
        if rec is None or rec.state != states.CANCELED:
            return False
        for item in dj.items(rec.dataset(), 0x00741002):
            for code in dj.items(item, 0x0074100E):
                if dj.first(code, 0x00080100) == "110528" and dj.first(code, 0x00080102) == "DCM":
                    return True
        return False
