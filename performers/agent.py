"""The performer agent: turns eligible workitems into rq jobs (triggered pull, AIW-I).

It holds a filtered global subscription on the Task Manager's event channel and reacts to
State Reports of SCHEDULED workitems whose inputs are READY (at creation, or later when
readiness becomes READY); it also searches the worklist periodically, which catches up on
whatever was created while it or its channel was down. Each eligible workitem becomes one
rq job, deduplicated by workitem UID; HIGH priority goes to the queue workers serve first.

A UPS Cancel Requested event for a workitem is relayed as a flag in the queue's Redis; the
worker running that job reads it at its next stage boundary (``performers.job``). The agent
is the performer's one subscriber, so it is the AE that receives those events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import structlog
from rq import Queue

from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs.client import UpsClient, UpsError
from upsrs.eventclient import EventChannel, EventReport

from performers import workitem as wi
from performers.connections import sync_redis
from performers.settings import PerformerSettings

log = structlog.get_logger("aiw.agent")
JOB_FUNCTION = "performers.job.perform"
DISCONTINUATION_SEQ = 0x0074100E
CATCH_UP_FIELDS = ["00741000", "00404041", "00741200", "00404018", "00741202"]


def code_key(value: str) -> tuple[str, str]:
    """The matching key of a Scheduled Workitem Code: Code Value holds 16 characters (SH),
    longer codes are Long Code Values."""
    attr = "CodeValue" if len(value) <= 16 else "LongCodeValue"
    return (f"ScheduledWorkitemCodeSequence.{attr}", value)


def job_id(settings: PerformerSettings, uid: str) -> str:
    """rq job IDs allow letters, digits, '_' and '-' only: UID dots become '_'."""
    return f"{settings.queue_prefix}-{uid.replace('.', '_')}"


class Agent:
    def __init__(self, settings: PerformerSettings, codes: list[tuple[str, str]] | None = None):
        self.settings = settings
        self.redis = sync_redis(settings.queue_url)
        self.queues = {name: Queue(name, connection=self.redis) for name in settings.queues}
        self.codes = codes if codes is not None else self._model_codes()
        self.enqueued = 0
        self._lock = asyncio.Lock()

    def _model_codes(self) -> list[tuple[str, str]]:
        from performers.job import models  # loading models is the worker's business; codes only

        return list(models(tuple(self.settings.models), self.settings.external_models))

    # ------------------------------------------------------------------ running
    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        async with UpsClient(self.settings.ups_url) as ups:
            self.ups = ups
            channel = EventChannel(ups.channel_url(self.settings.ae_title), on_connect=self._subscribe,
                                   on_cold_start=self._subscribe)
            tasks = [asyncio.create_task(self._events(channel)), asyncio.create_task(self._catch_up_loop())]
            log.info("agent started", ae=self.settings.ae_title, codes=self.codes, queues=self.settings.queues)
            try:
                await stop.wait()
            finally:
                await channel.close()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self.redis.close()

    def _filter(self) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        if len(self.codes) == 1:
            keys.append(code_key(self.codes[0][0]))
        if self.settings.worklist_label:
            keys.append(("WorklistLabel", self.settings.worklist_label))
        return keys

    async def _subscribe(self) -> None:
        """After every (re)connection: the subscription may have been lost (cold start)."""
        try:
            await self.ups.subscribe(self.settings.ae_title, filter=self._filter() or None)
        except UpsError as exc:
            log.error("subscribe refused", error=str(exc))

    async def _events(self, channel: EventChannel) -> None:
        async for event in channel:
            try:
                await self.on_event(event)
            except Exception as exc:  # one bad event must not stop the agent
                log.error("event handling failed", workitem=event.uid, error=repr(exc))

    async def on_event(self, event: EventReport) -> None:
        if event.type == ev.CANCEL_REQUESTED:
            self.flag_cancel(event)
        elif event.type == ev.STATE_REPORT and event.state == "SCHEDULED" and event.readiness == "READY":
            await self.consider(event.uid)
        elif event.type == ev.SCP_STATUS_CHANGE:
            await self.catch_up()  # the server restarted: look at the whole worklist

    def flag_cancel(self, event: EventReport) -> None:
        codes = dj.items(event.dataset, DISCONTINUATION_SEQ)
        code = None
        if codes:
            c = codes[0]
            code = [dj.first(c, 0x00080100) or dj.first(c, 0x00080119), dj.first(c, 0x00080102), dj.first(c, 0x00080104)]
        request = {"reason": event.value(0x00741238), "code": code, "requester": event.requesting_ae}
        self.redis.set(self.settings.cancel_key(event.uid), orjson.dumps(request), ex=7 * 24 * 3600)
        log.info("cancel requested", workitem=event.uid, requester=event.requesting_ae)

    async def consider(self, uid: str) -> bool:
        """Retrieve the workitem and enqueue it if this performer serves it."""
        try:
            doc = await self.ups.retrieve(uid)
        except UpsError:
            return False
        return await self.offer(uid, doc)

    async def offer(self, uid: str, doc: dict[str, Any]) -> bool:
        if dj.first(doc, wi.STATE) != "SCHEDULED" or dj.first(doc, wi.READINESS) != "READY":
            return False
        if self.settings.worklist_label and dj.first(doc, wi.WORKLIST_LABEL) != self.settings.worklist_label:
            return False
        if not any((c.value, c.scheme) in self.codes for c in wi.codes_of(doc, wi.WORKITEM_CODE_SEQ)):
            return False
        return await asyncio.to_thread(self.enqueue, uid, dj.first(doc, wi.PRIORITY) == "HIGH")

    def enqueue(self, uid: str, urgent: bool) -> bool:
        """One job per workitem: the guard key is taken here and released by the job."""
        if not self.redis.set(self.settings.guard_key(uid), b"1", nx=True, ex=self.settings.job_timeout + 60):
            return False
        queue = self.queues[self.settings.queues[0 if urgent else 1]]
        queue.enqueue(JOB_FUNCTION, uid, job_id=job_id(self.settings, uid),
                      job_timeout=self.settings.job_timeout, result_ttl=24 * 3600, failure_ttl=7 * 24 * 3600,
                      description=f"perform workitem {uid}")
        self.enqueued += 1
        log.info("enqueued", workitem=uid, queue=queue.name)
        return True

    async def catch_up(self) -> int:
        """Search the worklist for eligible workitems (after outages, and periodically)."""
        n = 0
        async with self._lock:
            for value, _scheme in self.codes:
                match = [("ProcedureStepState", "SCHEDULED"), ("InputReadinessState", "READY"), code_key(value)]
                if self.settings.worklist_label:
                    match.append(("WorklistLabel", self.settings.worklist_label))
                try:
                    async for doc in self.ups.search_all(match, includefield=CATCH_UP_FIELDS):
                        uid = dj.first(doc, 0x00080018)
                        if uid and await self.offer(uid, doc):
                            n += 1
                except UpsError as exc:  # one refused search must not stop the others
                    log.error("catch-up search refused", code=value, error=str(exc))
        return n

    async def _catch_up_loop(self) -> None:
        while True:
            try:
                found = await self.catch_up()
                if found:
                    log.info("catch-up enqueued", count=found)
            except Exception as exc:
                log.warning("catch-up failed", error=repr(exc))
            await asyncio.sleep(self.settings.catchup_interval)
