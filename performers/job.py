"""One workitem, performed: the rq job a worker runs.

claim (a new Transaction UID; a lost race ends the job quietly) → retrieve the inputs
with WADO-RS → build volumes → run the model → encode SEG + SR → STOW-RS → record the
Performed Procedure and Output Information → COMPLETED. Progress is reported before each
stage and re-sent as a heartbeat during long ones (the Task Manager's lease, see
``ups_server.leases``). A Cancel Requested event (relayed by the agent as a flag in the
queue's Redis) stops the job at the next stage boundary; any failure ends the workitem
CANCELED with a CID 9300 reason and a sentence a QA person can act on. Inputs live in a
temporary directory that is removed after every job, whatever happened.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable

import orjson
import structlog
from redis.asyncio import Redis

from upsrs import datetimes
from upsrs import dicomjson as dj
from upsrs.client import BadRequest, Conflict, UpsClient, UpsError, WorkitemGone, WorkitemNotFound
from upsrs.uids import new_uid

from performers import workitem as wi
from performers.connections import async_redis, sync_redis
from performers.dicomweb import (RetrievalError, RetrievedInstance, StoreError, fetch_series, parse_retrieve_url,
                                 store_instances)
from performers.models.base import DISCONTINUATION, Code, Model, ModelInput, ModelOutput, UnusableInput
from performers.models.registry import load_external, load_model
from performers.results import Algorithm, encode
from performers.settings import PerformerSettings
from performers.volumes import load_series

log = structlog.get_logger("aiw.performer")

STAGES = ("claim", "retrieve", "volume", "model", "encode", "store", "complete")
PERCENT = {"retrieve": 5, "volume": 25, "model": 35, "encode": 70, "store": 85, "complete": 95}
DESCRIPTION = {"retrieve": "Retrieving inputs (WADO-RS)", "volume": "Building volumes",
               "model": "Running the model", "encode": "Encoding SEG and SR",
               "store": "Storing results (STOW-RS)", "complete": "Recording results"}
# What ends a job that failed, by stage: CID 9300 code and the start of the reason.
FAILURE = {"retrieve": ("110523", "Retrieving the inputs failed"),
           "volume": ("110523", "The inputs could not be read"),
           "model": ("110501", "The model failed"),
           "encode": ("110501", "Encoding the results failed"),
           "store": ("110501", "Storing the results failed"),
           "complete": ("110501", "Recording the results failed")}


def _requested_code(code: list[str | None] | None) -> Code:
    """The requester's CID 9300 code from a Cancel Requested event; a code sent without
    meaning or scheme borrows them from the codes we know, else 110513."""
    if not code or not code[0]:
        return DISCONTINUATION["110513"]
    value, scheme, meaning = (list(code) + [None, None])[:3]
    known = DISCONTINUATION.get(str(value))
    return Code(str(value), str(scheme or (known.scheme if known else "DCM")),
                str(meaning or (known.meaning if known else "Discontinued for unspecified reason")))


class Stopped(Exception):
    """A Cancel Requested event arrived for this workitem."""

    def __init__(self, request: dict[str, Any]):
        self.request = request
        super().__init__(request.get("reason") or "cancellation requested")


@dataclass
class Report:
    """What a job did: kept as the rq job's result and written to the log."""

    uid: str
    outcome: str  # completed | canceled | lost-race | skipped
    detail: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: list[dict[str, str | None]] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"uid": self.uid, "outcome": self.outcome, "detail": self.detail, "seconds": self.seconds,
                "outputs": self.outputs, "findings": self.findings}


@cache
def models(names: tuple[str, ...], external: Path | None) -> dict[tuple[str, str], Model]:
    """The models this performer serves, by (code value, scheme) of their workitem code."""
    found = [load_model(n) for n in names] + (load_external(external) if external else [])
    return {(m.workitem_code.value, m.workitem_code.scheme): m for m in found}


def perform(uid: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The rq entry point (synchronous). Settings come from the worker's environment
    (``AIW_*``): the worker's machine knows its scratch space and its PACS."""
    cfg = PerformerSettings(**(settings or {}))
    try:
        return asyncio.run(Job(uid, cfg).run()).as_dict()
    finally:
        with sync_redis(cfg.queue_url) as r:
            r.delete(cfg.guard_key(uid))


class Job:
    def __init__(self, uid: str, settings: PerformerSettings):
        self.uid = uid
        self.settings = settings
        self.report = Report(uid, "skipped")
        self.tuid = ""
        self.percent = 0.0
        self.description = "Claimed"
        self.log = log.bind(workitem=uid)

    # ------------------------------------------------------------------ the job
    async def run(self) -> Report:
        t_all = time.perf_counter()
        async with UpsClient(self.settings.ups_url) as ups:
            self.ups = ups
            model, doc = await self._eligible()
            if model is None:
                return self.report
            # scratch space before the claim: a worker that cannot have it must not claim
            tmp = Path(tempfile.mkdtemp(prefix="aiw-job-", dir=self.settings.work_dir))
            self.tuid = new_uid()
            t = time.perf_counter()
            try:
                await ups.claim(self.uid, self.tuid)
            except (BadRequest, Conflict) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                self.report.outcome, self.report.detail = "lost-race", exc.warning
                self.log.info("claim lost", warning=exc.warning)
                return self.report
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self.report.seconds["claim"] = time.perf_counter() - t
            self.log.info("claimed", model=model.name)
            queue = async_redis(self.settings.queue_url)
            beat = asyncio.create_task(self._heartbeat())
            try:
                await self._perform(model, doc, queue, tmp)
            finally:
                beat.cancel()
                shutil.rmtree(tmp, ignore_errors=True)
                await queue.aclose()
        self.report.seconds["total"] = time.perf_counter() - t_all
        self.log.info("job done", outcome=self.report.outcome, detail=self.report.detail,
                      seconds={k: round(v, 3) for k, v in self.report.seconds.items()})
        return self.report

    async def _eligible(self) -> tuple[Model | None, dict[str, Any]]:
        """The model for this workitem, if it is one this performer should claim now."""
        try:
            doc = await self.ups.retrieve(self.uid)
        except (WorkitemNotFound, WorkitemGone) as exc:
            self.report.detail = exc.warning or f"HTTP {exc.status}"
            return None, {}
        state, ready = dj.first(doc, wi.STATE), dj.first(doc, wi.READINESS)
        if state != "SCHEDULED" or ready != "READY":
            self.report.detail = f"workitem is {state}, inputs {ready}"
            return None, doc
        served = models(tuple(self.settings.models), self.settings.external_models)
        for code in wi.codes_of(doc, wi.WORKITEM_CODE_SEQ):
            if (code.value, code.scheme) in served:
                return served[(code.value, code.scheme)], doc
        self.report.detail = "no model of this performer serves the workitem's code"
        return None, doc

    async def _perform(self, model: Model, doc: dict[str, Any], queue: Redis, tmp: Path) -> None:
        started = datetimes.dt_now()
        stage = "retrieve"
        try:
            stage = "retrieve"
            series = await self._stage(stage, queue, lambda: self._retrieve(model, doc, tmp))
            stage = "volume"
            modality = {spec.role: spec.modality for spec in model.inputs}
            loaded = await self._stage(stage, queue, lambda: {
                r: load_series([i.dataset for i in got], modality=modality.get(r)) for r, got in series.items()})
            stage = "model"
            params = wi.parameters(doc)
            output: ModelOutput = await self._stage(stage, queue, lambda: model.run(
                ModelInput({r: v for r, (v, _) in loaded.items()}, params)))
            stage = "encode"
            prior = loaded.get("prior")
            results = await self._stage(stage, queue, lambda: encode(
                loaded["current"][1], loaded["current"][0], output, Algorithm.of(model),
                segmentation_type=self.settings.segmentation_type, prior_source=prior[1] if prior else None))
            stage = "store"
            target = wi.stow_url(doc) or self.settings.stow_url or self._same_pacs(doc)
            stored = await self._stage(stage, queue, lambda: store_instances(
                target, results.datasets(), timeout=self.settings.dicomweb_timeout,
                retries=self.settings.dicomweb_retries, backoff=self.settings.dicomweb_backoff))
            stage = "complete"
            outputs = [wi.OutputInstance(s.study_uid, s.series_uid, s.sop_class_uid, s.sop_instance_uid, s.retrieve_url)
                       for s in stored]
            await self._stage(stage, queue, None)
            t = time.perf_counter()
            station = Code(self.settings.station_code, self.settings.station_scheme, self.settings.station_meaning)
            await self.ups.update(self.uid, wi.performed(
                station=station, workitem_code=model.workitem_code, start=started, end=datetimes.dt_now(),
                parameters=output.parameters, outputs=outputs), self.tuid)
            await self.ups.complete(self.uid, self.tuid)
            self.report.seconds["complete"] = time.perf_counter() - t
            self.report.outcome = "completed"
            self.report.outputs = [vars(o) for o in outputs]
            self.report.findings = [f"{m.name.meaning}: {m.value:g} {m.unit.value}" for m in output.summary]
        except Stopped as stop:
            code = stop.request.get("code")
            reason = _requested_code(code)
            requester = stop.request.get("requester") or "a requester"
            text = f"Canceled at the request of {requester} before stage '{stage}'"
            if stop.request.get("reason"):
                text += f": {stop.request['reason']}"
            await self._cancel(reason, text)
        except UnusableInput as exc:
            await self._cancel(exc.reason, exc.text)
        except Exception as exc:  # the workitem must end, whatever failed
            code, what = FAILURE[stage]
            detail = str(exc) if isinstance(exc, (RetrievalError, StoreError, UpsError)) else f"{type(exc).__name__}: {exc}"
            trace = None if isinstance(exc, (RetrievalError, StoreError)) else traceback.format_exc(limit=8)
            self.log.error("stage failed", stage=stage, error=detail, traceback=trace)
            await self._cancel(DISCONTINUATION[code], f"{what}: {detail}")

    def _same_pacs(self, doc: dict[str, Any]) -> str:
        """No Output Destination and no default: store where the inputs came from."""
        current = wi.roles(doc).get("current")
        if current is None or not current.retrieve_url:
            raise StoreError("no STOW-RS destination: the workitem names none and AIW_STOW_URL is not set", url="")
        return parse_retrieve_url(current.retrieve_url)[0]

    def _retrieve(self, model: Model, doc: dict[str, Any], tmp: Path) -> dict[str, list[RetrievedInstance]]:
        found = wi.roles(doc)
        for spec in model.inputs:
            if spec.required and spec.role not in found:
                raise UnusableInput("110523", f"the Input Information Sequence names no {spec.role} series "
                                              f"({spec.modality}) for {model.name}")
        wanted = {s.role for s in model.inputs}
        out: dict[str, list[RetrievedInstance]] = {}
        for role, series in found.items():
            if role not in wanted:
                continue
            if not series.retrieve_url:
                raise UnusableInput("110523", f"input series {series.series_uid} has no WADO-RS Retrieve URL "
                                              "(0040,E025)>(0008,1190)")
            out[role] = fetch_series(series.retrieve_url, tmp / role, timeout=self.settings.dicomweb_timeout,
                                     retries=self.settings.dicomweb_retries, backoff=self.settings.dicomweb_backoff)
            if not out[role]:
                raise UnusableInput("110523", f"WADO-RS returned no instances for series {series.series_uid}")
        return out

    # ------------------------------------------------------------------ stages
    async def _stage(self, name: str, queue: Redis, work: Callable[[], Any] | None) -> Any:
        """Stage boundary: honour a cancel request, report progress, run ``work`` in a
        thread (the heartbeat keeps going), time it.

        The progress N-SET travels while the work runs rather than before it (~10 ms a
        stage saved): the stage's outcome still waits for it, so a refused update (the
        workitem was taken from us) fails the stage as it did when sent first; when the
        work fails too, the work's error is the one reported."""
        flag = await queue.get(self.settings.cancel_key(self.uid))
        if flag is not None:
            raise Stopped(orjson.loads(flag))
        self.percent, self.description = PERCENT[name], DESCRIPTION[name]
        progress = asyncio.ensure_future(self._send_progress())
        if work is None:
            await progress
            return None
        t = time.perf_counter()
        try:
            result = await asyncio.to_thread(work)
        except BaseException:
            await asyncio.gather(progress, return_exceptions=True)
            raise
        self.report.seconds[name] = time.perf_counter() - t
        await progress
        return result

    async def _send_progress(self) -> None:
        await self.ups.update(self.uid, wi.progress(self.percent, self.description), self.tuid)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._send_progress()
            except (UpsError, OSError) as exc:
                self.log.warning("heartbeat failed", error=str(exc))
            except Exception as exc:  # httpx transport errors and the like
                self.log.warning("heartbeat failed", error=repr(exc))

    async def _cancel(self, code: Code, text: str) -> None:
        self.report.outcome, self.report.detail = "canceled", f"{code.value} {code.meaning}: {text}"
        self.log.warning("canceling", reason=text, code=code.value)
        try:
            await self.ups.update(self.uid, wi.discontinuation(self.percent, text, code), self.tuid)
            await self.ups.cancel(self.uid, self.tuid)
        except Exception as exc:
            # The Task Manager's lease will reschedule it: the workitem is not stranded.
            self.log.error("cancel failed; leaving it to the lease", error=repr(exc))
