"""The performer's agent and job against a real Task Manager (``aiw server`` on the test
redis-server) and the built-in DICOMweb store (uvicorn in a thread), jobs run IN PROCESS
(``Job(uid, settings).run()`` under asyncio): no rq workers, except one in-process
``SimpleWorker`` to show that the guard key is released when a job has run.

Covered: the happy path (COMPLETED, SEG + SR listed, progress in stage order, temp dir
gone, Transaction UID never leaked); unusable inputs (110523 / 110522); a model that
raises (110501); a STOW-RS failure; a requester's cancel relayed by the agent; workitems
the job must leave alone; the agent's queues, dedup, cancel flags and catch-up search.
"""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import orjson
import pydicom
import pytest
import structlog.testing
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from redis import Redis
from rq import Queue, SimpleWorker

from performers import job as job_module
from performers import synthetic
from performers import workitem as wi
from performers.agent import Agent, job_id
from performers.dicomweb import retrieve_series, store_instances
from performers.job import DESCRIPTION, STAGES, Job, Report
from performers.models import registry
from performers.models.base import Code, InputSpec, ModelInput, ModelOutput
from performers.models.lesions import LesionModel
from performers.settings import PerformerSettings
from requester_cli import builder as b
from tests.listen import Collector
from tests.servers import RedisProcess, ServerProcess, free_port, start_server, wait_until
from tests.test_dicomweb_store import mounted, serve
from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs import validation
from upsrs.client import BadRequest, UpsClient
from upsrs.eventclient import EventReport
from upsrs.uids import new_uid

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

LESIONS = ("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
RAISING = ("AIW-TEST-RAISE", "99AIW", "Model that raises (test)")
NEEDS_PRIOR = ("AIW-TEST-PRIOR", "99AIW", "Model that needs a prior (test)")
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SHAPE = dict(shape=(64, 64, 24), spacing=(1.5, 1.5, 3.0), n_lesions=2)
STAGE_TEXTS = [DESCRIPTION[s] for s in STAGES if s in DESCRIPTION]


class RaisingModel:
    """A Python model plugin whose inference fails."""

    name = "aiw-test-raising"
    version = "0.1"
    manufacturer = "aiw tests"
    device_uid = "2.25.1234567"
    workitem_code = Code(*RAISING)
    inputs = (InputSpec("current", "MR"),)

    def run(self, inputs: ModelInput) -> ModelOutput:
        raise RuntimeError("CUDA out of memory (test)")


NEEDS_PRIOR_YAML = """
models:
  - name: aiw-test-needs-prior
    version: "0.1"
    manufacturer: aiw tests
    workitem_code: {value: AIW-TEST-PRIOR, scheme: 99AIW, meaning: Model that needs a prior (test)}
    inputs: [{role: current, modality: MR}, {role: prior, modality: MR, required: true}]
    command: ["false"]
"""


# ---------------------------------------------------------------- the actors

@pytest.fixture(scope="module")
def ups_url(redis_proc: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv: ServerProcess = start_server(redis_proc.url, log_dir=tmp_path_factory.mktemp("perf-jobs-server"))
    yield srv.url
    srv.stop()


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The built-in DICOMweb store; yields its service root."""
    with serve(mounted(tmp_path_factory.mktemp("perf-jobs-store"))) as url:
        yield f"{url}/dicom-web"


@pytest.fixture(scope="module")
def pair(pacs: str) -> tuple[synthetic.Study, synthetic.Study]:
    """(current, prior) of one patient, stored."""
    current, prior = synthetic.make_pair(31, **SHAPE)  # type: ignore[arg-type]
    for s in (prior, current):
        assert len(store_instances(pacs, s.flair.datasets, retries=0)) == len(s.flair.datasets)
    return current, prior


@pytest.fixture
def settings(redis_proc: RedisProcess, ups_url: str, tmp_path: Path) -> PerformerSettings:
    (tmp_path / "work").mkdir()
    return PerformerSettings(ups_url=ups_url, queue_url=redis_proc.url, queue_prefix=f"pj{uuid.uuid4().hex[:10]}",
                             ae_title=f"PJ{uuid.uuid4().hex[:10].upper()}", work_dir=tmp_path / "work",
                             dicomweb_retries=0, dicomweb_backoff=0.01, dicomweb_timeout=20,
                             models=["aiw-flair-lesions"], external_models=None, heartbeat_seconds=30)


@pytest.fixture
def queue_redis(redis_proc: RedisProcess) -> Iterator[Redis]:
    r = Redis.from_url(redis_proc.url)
    yield r
    r.close()


# ---------------------------------------------------------------- helpers

def build(current: synthetic.Study | b.StudyRef, pacs: str, *, code: tuple[str, str, str] = LESIONS,
          prior: synthetic.Study | None = None, series: tuple[b.SeriesRef, ...] | None = None,
          stow_url: str | None = "", readiness: str = "READY", **procedure: Any) -> dict[str, Any]:
    ref = current if isinstance(current, b.StudyRef) else b.study_from_datasets(current.flair.datasets, pacs)
    prior_series = b.study_from_datasets(prior.flair.datasets, pacs).series if prior else ()
    return b.build(ref, b.Procedure(code, "MS lesion follow-up", **procedure), series or ref.series,
                   prior=prior_series, readiness=readiness, stow_url=pacs if stow_url == "" else stow_url)


async def create(ups_url: str, doc: dict[str, Any]) -> str:
    async with UpsClient(ups_url) as ups:
        return (await ups.create(doc)).uid


async def fetch(ups_url: str, uid: str) -> dict[str, Any]:
    async with UpsClient(ups_url) as ups:
        return await ups.retrieve(uid)


async def run(uid: str, settings: PerformerSettings, job_class: type[Job] = Job) -> tuple[Job, Report]:
    job = job_class(uid, settings)
    return job, await job.run()


def canceled_with(doc: dict[str, Any]) -> tuple[str, str]:
    """(CID 9300 code value, Reason For Cancellation) of a CANCELED workitem."""
    assert dj.first(doc, wi.STATE) == "CANCELED", doc.get("00741002")
    assert validation.final_state_problems(doc, "CANCELED") == []
    (item,) = dj.items(doc, wi.PROGRESS_SEQ)
    (code,) = wi.codes_of(item, wi.DISCONTINUATION_SEQ)
    return code.value, str(dj.first(item, wi.REASON_FOR_CANCELLATION))


def assert_clean(settings: PerformerSettings) -> None:
    assert settings.work_dir is not None and list(settings.work_dir.iterdir()) == []


def mr_as(datasets: list[Dataset], *, sop_class: str, modality: str) -> list[Dataset]:
    """A copy of a series re-labelled (new study/series/instance UIDs)."""
    study, series = generate_uid(), generate_uid()
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.SOPClassUID, ds.Modality = sop_class, modality
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, ds.SOPInstanceUID
        if modality == "CT":
            ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        out.append(ds)
    return out


def text_sr(patient_of: Dataset) -> Dataset:
    """A Basic Text SR: a DICOM object that is no image."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = patient_of.PatientID, patient_of.PatientName
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "SR", 50, 1
    ds.StudyDate, ds.StudyTime = "20261101", "101500"
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ContinuityOfContent = "SEPARATE"
    return ds


def queued(redis: Redis, settings: PerformerSettings) -> dict[str, list[str]]:
    return {name: Queue(name, connection=redis).job_ids for name in settings.queues}


# ================================================================ the happy path

async def test_happy_path_in_process(ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study],
                                     settings: PerformerSettings, tmp_path: Path) -> None:
    current, prior = pair
    params = (b.Parameter(("threshold_factor", "99AIW", "Lesion threshold in robust SDs above the brain median"), 4.5),
              b.Parameter(("min_lesion_mm3", "99AIW", "Minimum lesion volume (mm3)"), 20.0))
    uid = await create(ups_url, build(current, pacs, prior=prior, parameters=params))
    me = settings.ae_title
    async with UpsClient(ups_url) as ups:
        async with Collector(ups.channel_url(me)) as events:
            await ups.subscribe(me, uid)
            job, report = await run(uid, settings)
            await events.wait(lambda: any(e.state == "COMPLETED" for e in events.of(uid)), what="COMPLETED report")
            found = [e.dataset for e in events.of(uid)]
            progress = [(e.progress, dj.first(dj.items(e.dataset, wi.PROGRESS_SEQ)[0], wi.PROGRESS_DESCRIPTION))
                        for e in events.of(uid) if e.type == ev.PROGRESS_REPORT]
        doc = await ups.retrieve(uid)
        listed = (await ups.search([("SOPInstanceUID", uid)], includefield=["all"])).items

    assert report.outcome == "completed", report.detail
    assert dj.first(doc, wi.STATE) == "COMPLETED"
    assert validation.final_state_problems(doc, "COMPLETED") == []
    # progress: one report per stage, in the order of the stages, percent rising
    assert [text for _, text in progress] == STAGE_TEXTS
    percents = [float(p) for p, _ in progress]
    assert percents == sorted(percents) and percents[0] > 0
    # the performed procedure: station, code, parameters actually used, SEG + SR listed
    (performed,) = dj.items(doc, wi.PERFORMED_SEQ)
    assert wi.codes_of(performed, wi.PERFORMED_CODE_SEQ) == [Code(*LESIONS)]
    assert wi.codes_of(performed, wi.PERFORMED_STATION_SEQ) == [
        Code(settings.station_code, settings.station_scheme, settings.station_meaning)]
    used = wi.parameters({dj.key(wi.PARAMETERS_SEQ): performed[dj.key(wi.PERFORMED_PARAMETERS_SEQ)]})
    assert used["threshold_factor"] == 4.5 and used["min_lesion_mm3"] == 20.0
    outputs = dj.items(performed, wi.OUTPUT_INFO_SEQ)
    assert len(outputs) == 2
    modalities = set()
    for n, item in enumerate(outputs):
        assert dj.first(item, wi.STUDY_UID) == current.study_uid  # filed in the current study
        (url,) = [dj.first(r, wi.RETRIEVE_URL) for r in dj.items(item, wi.WADO_RS_SEQ)]
        assert url == f"{pacs}/studies/{current.study_uid}/series/{dj.first(item, wi.SERIES_UID)}"
        files = retrieve_series(url, tmp_path / str(n), retries=0)
        listed_sops = {dj.first(r, wi.REFERENCED_SOP_INSTANCE) for r in dj.items(item, wi.REFERENCED_SOP_SEQ)}
        got = [pydicom.dcmread(f) for f in files]
        assert {d.SOPInstanceUID for d in got} == listed_sops
        modalities |= {d.Modality for d in got}
    assert modalities == {"SEG", "SR"}
    assert any(f.startswith("Change in number of lesions since prior") for f in report.findings)
    assert_clean(settings)
    # the Transaction UID is the performer's secret: in no stored workitem, answer or event
    assert job.tuid and job.tuid not in json.dumps(doc) and job.tuid not in json.dumps(listed)
    assert found and all(job.tuid not in json.dumps(e) for e in found)


async def test_no_output_destination_stores_where_the_inputs_came_from(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings) -> None:
    assert settings.stow_url is None
    doc = build(pair[0], pacs, stow_url=None)
    assert wi.stow_url(doc) is None
    uid = await create(ups_url, doc)
    _, report = await run(uid, settings)
    assert report.outcome == "completed", report.detail
    done = await fetch(ups_url, uid)
    (performed,) = dj.items(done, wi.PERFORMED_SEQ)
    urls = [dj.first(r, wi.RETRIEVE_URL) for i in dj.items(performed, wi.OUTPUT_INFO_SEQ)
            for r in dj.items(i, wi.WADO_RS_SEQ)]
    assert len(urls) == 2 and all(u.startswith(f"{pacs}/studies/{pair[0].study_uid}/series/") for u in urls)
    assert_clean(settings)


# ================================================================ unusable inputs

async def test_input_series_not_in_the_store_is_110523_naming_the_series(
        ups_url: str, pacs: str, settings: PerformerSettings) -> None:
    st, se = generate_uid(), generate_uid()
    gone = b.SeriesRef(st, se, "MR", instances=(("1.2.840.10008.5.1.4.1.1.4", generate_uid()),),
                       retrieve_url=f"{pacs}/studies/{st}/series/{se}")
    ref = b.StudyRef(st, "PAT-GONE", series=(gone,))
    uid = await create(ups_url, build(ref, pacs))
    job, report = await run(uid, settings)
    assert report.outcome == "canceled"
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert code == "110523"
    assert reason.startswith("Retrieving the inputs failed") and se in reason and "404" in reason
    assert_clean(settings)
    assert job.tuid not in json.dumps(await fetch(ups_url, uid))


async def test_input_without_a_wado_rs_url_is_110523(ups_url: str, pacs: str,
                                                   pair: tuple[synthetic.Study, synthetic.Study],
                                                   settings: PerformerSettings) -> None:
    current, _ = pair
    ref = b.study_from_datasets(current.flair.datasets, pacs)
    doc = build(ref, pacs, series=(b.SeriesRef(**{**vars(ref.series[0]), "retrieve_url": None}),))
    # retrievable only by DIMSE (C-MOVE from an AE): a valid input, but not for this performer
    doc["00404021"]["Value"][0]["0040E021"] = dj.element("SQ", {"00080054": dj.element("AE", "PACS_AE")})
    uid = await create(ups_url, doc)
    _, report = await run(uid, settings)
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert (report.outcome, code) == ("canceled", "110523")
    assert current.flair.series_uid in reason and "WADO-RS" in reason
    assert_clean(settings)


async def test_an_sr_as_input_is_110522(ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study],
                                        settings: PerformerSettings) -> None:
    sr = text_sr(pair[0].flair.datasets[0])
    store_instances(pacs, [sr], retries=0)
    ref = b.study_from_datasets([sr], pacs)
    uid = await create(ups_url, build(ref, pacs))
    _, report = await run(uid, settings)
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert (report.outcome, code) == ("canceled", "110522")
    assert sr.SOPInstanceUID in reason and "SOP class" in reason
    assert_clean(settings)


async def test_a_ct_series_for_an_mr_model_is_110522(ups_url: str, pacs: str,
                                                     pair: tuple[synthetic.Study, synthetic.Study],
                                                     settings: PerformerSettings) -> None:
    ct = mr_as(pair[0].flair.datasets, sop_class=CTImageStorage, modality="CT")
    store_instances(pacs, ct, retries=0)
    uid = await create(ups_url, build(b.study_from_datasets(ct, pacs), pacs))
    _, report = await run(uid, settings)
    assert_clean(settings)
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert (report.outcome, code) == ("canceled", "110522")
    assert "CT" in reason


async def test_missing_required_prior_is_110523(ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study],
                                                settings: PerformerSettings, tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(NEEDS_PRIOR_YAML)
    settings.external_models = models
    uid = await create(ups_url, build(pair[0], pacs, code=NEEDS_PRIOR))
    _, report = await run(uid, settings)
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert (report.outcome, code) == ("canceled", "110523")
    assert "prior" in reason and "aiw-test-needs-prior" in reason
    assert_clean(settings)


# ================================================================ failures of the performer

async def test_a_model_that_raises_is_110501_and_the_temp_dir_is_removed(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.BUILTIN, RaisingModel.name, f"{__name__}:RaisingModel")
    settings.models = [RaisingModel.name]
    seen: list[list[Path]] = []
    real = job_module.load_series

    def load_and_look(paths: list[Path], **kw: Any):  # type: ignore[no-untyped-def]
        seen.append(list(settings.work_dir.iterdir()))  # type: ignore[union-attr]
        return real(paths, **kw)

    monkeypatch.setattr(job_module, "load_series", load_and_look)
    uid = await create(ups_url, build(pair[0], pacs, code=RAISING))
    with structlog.testing.capture_logs() as logs:  # also spares rendering a traceback with its locals
        job, report = await run(uid, settings)
    doc = await fetch(ups_url, uid)
    assert any(e["event"] == "stage failed" and e["stage"] == "model" for e in logs), logs
    code, reason = canceled_with(doc)
    assert (report.outcome, code) == ("canceled", "110501")
    assert reason.startswith("The model failed: ") and "CUDA out of memory (test)" in reason
    assert seen and seen[0], "the inputs were downloaded into a job directory under work_dir"
    assert_clean(settings)
    assert job.tuid not in json.dumps(doc)
    assert not dj.items(doc, wi.PERFORMED_SEQ) or not dj.items(dj.items(doc, wi.PERFORMED_SEQ)[0], wi.OUTPUT_INFO_SEQ)


class RefusedDuringVolume(Job):
    """A Task Manager that refuses the volume stage's progress N-SET (the workitem was
    taken from this performer), after a delay: the work runs meanwhile."""

    async def _send_progress(self) -> None:
        if self.description == DESCRIPTION["volume"]:
            await asyncio.sleep(0.2)
            raise BadRequest(httpx.Response(400, headers={"warning": '299 aiw "claimed by another (test)"'}), "update")
        await super()._send_progress()


@pytest.mark.parametrize("volume_fails", [False, True])
async def test_a_refused_progress_update_fails_its_stage_even_when_sent_during_the_work(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        monkeypatch: pytest.MonkeyPatch, volume_fails: bool) -> None:
    ran: list[str] = []
    real = job_module.load_series

    def load(*args: Any, **kw: Any):  # type: ignore[no-untyped-def]
        ran.append("volume")
        if volume_fails:
            raise ValueError("unreadable slice (test)")
        return real(*args, **kw)

    monkeypatch.setattr(job_module, "load_series", load)
    monkeypatch.setattr(LesionModel, "run", lambda self, inputs: ran.append("model"))
    uid = await create(ups_url, build(pair[0], pacs))
    with structlog.testing.capture_logs() as logs:
        _, report = await run(uid, settings, RefusedDuringVolume)
    assert ran == ["volume"]  # the work ran beside the update, and nothing after the refusal
    assert report.outcome == "canceled"
    failed = [e for e in logs if e["event"] == "stage failed"]
    assert [e["stage"] for e in failed] == ["volume"]
    # the work's own error wins when both fail; otherwise the refusal is the stage's error
    expected = "unreadable slice (test)" if volume_fails else "claimed by another (test)"
    assert expected in failed[0]["error"] and expected in report.detail
    assert_clean(settings)


async def test_store_failure_cancels_with_storing_the_results_failed(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings) -> None:
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    uid = await create(ups_url, build(pair[0], pacs, stow_url=closed))
    _, report = await run(uid, settings)
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert (report.outcome, code) == ("canceled", "110501")
    assert reason.startswith("Storing the results failed") and closed in reason
    assert_clean(settings)


async def test_store_retries_honour_the_backoff_setting(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings.dicomweb_retries, settings.dicomweb_backoff = 2, 0.0
    real = job_module.store_instances
    took: list[float] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            took.append(time.perf_counter() - t)

    monkeypatch.setattr(job_module, "store_instances", timed)
    uid = await create(ups_url, build(pair[0], pacs, stow_url=f"http://127.0.0.1:{free_port()}/dicom-web"))
    _, report = await run(uid, settings)
    assert report.outcome == "canceled" and "Storing the results failed" in report.detail
    # two retries of a refused connection with no backoff take milliseconds (urllib3's
    # second retry sleeps backoff x 2 = 1 s with the default 0.5)
    assert len(took) == 1 and took[0] < 0.6, took


async def test_a_missing_work_dir_does_not_strand_the_workitem(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        tmp_path: Path) -> None:
    settings.work_dir = tmp_path / "no-such-dir"
    uid = await create(ups_url, build(pair[0], pacs))
    try:
        await run(uid, settings)
    except OSError:
        pass
    state = dj.first(await fetch(ups_url, uid), wi.STATE)
    assert state in ("SCHEDULED", "CANCELED"), f"left {state} until the lease expires"


# ================================================================ cancellation

async def test_cancel_requested_during_the_volume_stage_stops_before_the_model(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        queue_redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole relay: requester → Task Manager → Cancel Requested event → agent's flag in
    the queue Redis → the job, at its next stage boundary (before 'model')."""
    agent = Agent(settings, codes=[LESIONS[:2]])
    uid = await create(ups_url, build(pair[0], pacs))
    me = settings.ae_title
    real = job_module.load_series
    relayed: list[EventReport] = []

    async with UpsClient(ups_url) as ups:
        async with Collector(ups.channel_url(me)) as events:
            await ups.subscribe(me, uid)
            loop = asyncio.get_running_loop()

            def cancel_meanwhile(paths: list[Path], **kw: Any):  # type: ignore[no-untyped-def]
                # runs in the job's worker thread, while the loop serves the event channel
                asyncio.run_coroutine_threadsafe(ups.request_cancellation(
                    uid, reason="wrong patient", reason_code=("110514", "DCM", "Incorrect worklist entry selected"),
                    requester="QA_DESK"), loop).result(10)
                wait_until(lambda: any(e.type == ev.CANCEL_REQUESTED for e in events.of(uid)), 10, "Cancel Requested")
                (event,) = [e for e in events.of(uid) if e.type == ev.CANCEL_REQUESTED]
                agent.flag_cancel(event)
                relayed.append(event)
                return real(paths, **kw)

            monkeypatch.setattr(job_module, "load_series", cancel_meanwhile)
            _, report = await run(uid, settings)
    agent.redis.close()

    assert relayed and report.outcome == "canceled"
    doc = await fetch(ups_url, uid)
    code, reason = canceled_with(doc)
    assert code == "110514"
    assert "QA_DESK" in reason and "wrong patient" in reason and "before stage 'model'" in reason
    assert not dj.items(doc, wi.PERFORMED_SEQ) or not dj.items(dj.items(doc, wi.PERFORMED_SEQ)[0], wi.OUTPUT_INFO_SEQ)
    assert "model" not in report.seconds
    assert_clean(settings)


async def test_cancel_flag_set_before_the_job_starts(ups_url: str, pacs: str,
                                                     pair: tuple[synthetic.Study, synthetic.Study],
                                                     settings: PerformerSettings, queue_redis: Redis) -> None:
    uid = await create(ups_url, build(pair[0], pacs))
    queue_redis.set(settings.cancel_key(uid), orjson.dumps({"reason": "duplicate order", "code": None,
                                                            "requester": "RIS"}))
    _, report = await run(uid, settings)
    code, reason = canceled_with(await fetch(ups_url, uid))
    assert report.outcome == "canceled" and code == "110513"  # no code given: unspecified reason
    assert "RIS" in reason and "duplicate order" in reason and "'retrieve'" in reason
    assert "retrieve" not in report.seconds
    assert_clean(settings)


# ================================================================ not eligible: the job leaves it alone

async def test_incomplete_workitem_is_skipped_untouched(ups_url: str, pacs: str,
                                                        pair: tuple[synthetic.Study, synthetic.Study],
                                                        settings: PerformerSettings) -> None:
    uid = await create(ups_url, build(pair[0], pacs, readiness="INCOMPLETE"))
    before = await fetch(ups_url, uid)
    job, report = await run(uid, settings)
    assert report.outcome == "skipped" and "INCOMPLETE" in report.detail
    assert await fetch(ups_url, uid) == before
    assert job.tuid == ""


async def test_workitem_claimed_by_someone_else_is_never_changed(ups_url: str, pacs: str,
                                                                 pair: tuple[synthetic.Study, synthetic.Study],
                                                                 settings: PerformerSettings) -> None:
    uid = await create(ups_url, build(pair[0], pacs))
    async with UpsClient(ups_url) as ups:
        theirs = await ups.claim(uid)
        await ups.update(uid, wi.progress(10, "theirs"), theirs)
        before = await ups.retrieve(uid)
        _, report = await run(uid, settings)
        assert report.outcome in ("skipped", "lost-race") and "IN PROGRESS" in report.detail
        assert await ups.retrieve(uid) == before
        await ups.update(uid, wi.progress(20, "still theirs"), theirs)  # their lock still holds


async def test_lost_race_between_eligibility_and_claim(ups_url: str, pacs: str,
                                                       pair: tuple[synthetic.Study, synthetic.Study],
                                                       settings: PerformerSettings) -> None:
    uid = await create(ups_url, build(pair[0], pacs))
    theirs = new_uid()

    class Raced(Job):
        async def _eligible(self):  # type: ignore[no-untyped-def]
            found = await super()._eligible()
            async with UpsClient(self.settings.ups_url) as other:  # another performer claims first
                await other.claim(self.uid, theirs)
            return found

    async with UpsClient(ups_url) as ups:
        _, report = await run(uid, settings, Raced)
        doc = await ups.retrieve(uid)
        assert report.outcome == "lost-race"
        assert dj.first(doc, wi.STATE) == "IN PROGRESS" and not dj.items(doc, wi.PROGRESS_SEQ)
        await ups.update(uid, wi.progress(5, "mine"), theirs)
    assert_clean(settings)


async def test_workitem_code_no_model_serves_is_skipped(ups_url: str, pacs: str,
                                                        pair: tuple[synthetic.Study, synthetic.Study],
                                                        settings: PerformerSettings) -> None:
    uid = await create(ups_url, build(pair[0], pacs, code=("AIW-NOBODY", "99AIW", "Nobody serves this")))
    before = await fetch(ups_url, uid)
    _, report = await run(uid, settings)
    assert report.outcome == "skipped" and "no model" in report.detail
    assert await fetch(ups_url, uid) == before
    # same code value, other scheme: not the model's code either
    uid = await create(ups_url, build(pair[0], pacs, code=("AIW-FLAIR-LES", "99OTHER", "lookalike")))
    _, report = await run(uid, settings)
    assert report.outcome == "skipped"


async def test_unknown_workitem_is_skipped(settings: PerformerSettings) -> None:
    _, report = await run(new_uid(), settings)
    assert report.outcome == "skipped" and report.detail


# ================================================================ the agent

async def test_offer_routes_by_priority_and_enqueues_once(ups_url: str, pacs: str,
                                                          pair: tuple[synthetic.Study, synthetic.Study],
                                                          settings: PerformerSettings, queue_redis: Redis) -> None:
    agent = Agent(settings, codes=[LESIONS[:2]])
    try:
        uids = {}
        for priority in ("HIGH", "MEDIUM", "LOW"):
            doc = build(pair[0], pacs, priority=priority)
            uids[priority] = uid = await create(ups_url, doc)
            assert await agent.offer(uid, await fetch(ups_url, uid)) is True
        high, default = settings.queues
        assert queued(queue_redis, settings) == {
            high: [job_id(settings, uids["HIGH"])],
            default: [job_id(settings, uids["MEDIUM"]), job_id(settings, uids["LOW"])]}
        # offered again (the event and the catch-up both saw it): no second job
        doc = await fetch(ups_url, uids["HIGH"])
        assert await agent.offer(uids["HIGH"], doc) is False
        assert len(queued(queue_redis, settings)[high]) == 1 and agent.enqueued == 3
        assert queue_redis.ttl(settings.guard_key(uids["HIGH"])) > settings.job_timeout
        rq_job = Queue(high, connection=queue_redis).fetch_job(job_id(settings, uids["HIGH"]))
        assert rq_job is not None and rq_job.func_name == "performers.job.perform" and rq_job.args == (uids["HIGH"],)
    finally:
        agent.redis.close()


async def test_offer_refuses_what_it_does_not_serve(ups_url: str, pacs: str,
                                                    pair: tuple[synthetic.Study, synthetic.Study],
                                                    settings: PerformerSettings, queue_redis: Redis) -> None:
    settings.worklist_label = "AI-NEURO"
    agent = Agent(settings, codes=[LESIONS[:2]])
    try:
        cases = {
            "incomplete": build(pair[0], pacs, worklist_label="AI-NEURO", readiness="INCOMPLETE"),
            "other label": build(pair[0], pacs, worklist_label="AI-CHEST"),
            "other code": build(pair[0], pacs, code=("AIW-OTHER", "99AIW", "other"), worklist_label="AI-NEURO"),
        }
        for what, doc in cases.items():
            uid = await create(ups_url, doc)
            assert await agent.offer(uid, await fetch(ups_url, uid)) is False, what
        assert queued(queue_redis, settings) == {q: [] for q in settings.queues}
    finally:
        agent.redis.close()


def test_guard_released_after_the_job_ran_allows_a_new_job(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        queue_redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """An rq SimpleWorker (in process, main thread: rq installs signal handlers) runs the
    job through the rq entry point; the worker's settings come from AIW_*."""
    code = ("AIW-NOT-SERVED", "99AIW", "Queued but not served by the worker's models")
    agent = Agent(settings, codes=[code[:2]])
    try:
        uid = asyncio.run(create(ups_url, build(pair[0], pacs, code=code)))
        assert asyncio.run(agent.offer(uid, asyncio.run(fetch(ups_url, uid)))) is True
        assert queue_redis.exists(settings.guard_key(uid))
        for name, value in (("UPS_URL", settings.ups_url), ("QUEUE_URL", settings.queue_url),
                            ("QUEUE_PREFIX", settings.queue_prefix), ("WORK_DIR", str(settings.work_dir)),
                            ("MODELS", '["aiw-flair-lesions"]')):
            monkeypatch.setenv(f"AIW_{name}", value)
        monkeypatch.delenv("AIW_EXTERNAL_MODELS", raising=False)
        worker = SimpleWorker([Queue(n, connection=queue_redis) for n in settings.queues], connection=queue_redis)
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker.work(burst=True, with_scheduler=False)
        finally:  # rq installs its own; give pytest its Ctrl-C back
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        rq_job = Queue(settings.queues[1], connection=queue_redis).fetch_job(job_id(settings, uid))
        assert rq_job is not None and rq_job.get_status() == "finished"
        assert rq_job.return_value()["outcome"] == "skipped"
        assert not queue_redis.exists(settings.guard_key(uid))
        assert queued(queue_redis, settings) == {q: [] for q in settings.queues}
        # still SCHEDULED + READY: the next event or catch-up may queue it again
        assert asyncio.run(agent.offer(uid, asyncio.run(fetch(ups_url, uid)))) is True
        assert queued(queue_redis, settings)[settings.queues[1]] == [job_id(settings, uid)]
        assert asyncio.run(agent.offer(uid, asyncio.run(fetch(ups_url, uid)))) is False
    finally:
        agent.redis.close()


def test_flag_cancel_stores_reason_code_and_requester(settings: PerformerSettings, queue_redis: Redis) -> None:
    agent = Agent(settings, codes=[LESIONS[:2]])
    try:
        uid = new_uid()
        long_code = "AIW-CANCEL-REASON-LONG"
        info = ev.cancel_requested("RIS_AE", {
            "00741238": dj.element("LT", "patient moved"),
            "0074100E": dj.element("SQ", wi.code_item(Code(long_code, "99AIW", "Patient moved"))),
        })
        agent.flag_cancel(EventReport(ev.CANCEL_REQUESTED, uid, 7, info))
        stored = orjson.loads(queue_redis.get(settings.cancel_key(uid)))
        assert stored == {"reason": "patient moved", "code": [long_code, "99AIW", "Patient moved"],
                          "requester": "RIS_AE"}
        assert 0 < queue_redis.ttl(settings.cancel_key(uid)) <= 7 * 24 * 3600
        # a bare request: no reason, no code
        bare = new_uid()
        agent.flag_cancel(EventReport(ev.CANCEL_REQUESTED, bare, 8, ev.cancel_requested("RIS_AE", {})))
        assert orjson.loads(queue_redis.get(settings.cancel_key(bare))) == {
            "reason": None, "code": None, "requester": "RIS_AE"}
    finally:
        agent.redis.close()


async def test_state_report_event_of_a_ready_workitem_is_enqueued(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        queue_redis: Redis) -> None:
    agent = Agent(settings, codes=[LESIONS[:2]])
    try:
        uid = await create(ups_url, build(pair[0], pacs))
        async with UpsClient(ups_url) as ups:
            agent.ups = ups
            await agent.on_event(EventReport(ev.STATE_REPORT, uid, 1, {
                "00741000": dj.element("CS", "SCHEDULED"), "00404041": dj.element("CS", "READY")}))
            assert await agent.consider(new_uid()) is False  # gone / never existed
        assert queued(queue_redis, settings)[settings.queues[1]] == [job_id(settings, uid)]
    finally:
        agent.redis.close()


async def test_catch_up_finds_scheduled_ready_workitems_of_its_codes(
        ups_url: str, pacs: str, pair: tuple[synthetic.Study, synthetic.Study], settings: PerformerSettings,
        redis_proc: RedisProcess, queue_redis: Redis) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    mine, label = (f"AIW-CU-{tag}", "99AIW", "Catch-up test"), f"AI-{tag}"
    make = {
        "mine": build(pair[0], pacs, code=mine, worklist_label=label),
        "mine high": build(pair[0], pacs, code=mine, worklist_label=label, priority="HIGH"),
        "incomplete": build(pair[0], pacs, code=mine, worklist_label=label, readiness="INCOMPLETE"),
        "other code": build(pair[0], pacs, code=(f"AIW-CX-{tag}", "99AIW", "other"), worklist_label=label),
        "other scheme": build(pair[0], pacs, code=(mine[0], "99OTHER", "lookalike"), worklist_label=label),
        "other label": build(pair[0], pacs, code=mine, worklist_label=f"XX-{tag}"),
        "in progress": build(pair[0], pacs, code=mine, worklist_label=label),
    }
    uids = {what: await create(ups_url, doc) for what, doc in make.items()}
    async with UpsClient(ups_url) as ups:
        await ups.claim(uids["in progress"])
        settings.worklist_label = label
        agent = Agent(settings, codes=[mine[:2]])
        other = settings.model_copy(update={"worklist_label": None, "queue_prefix": settings.queue_prefix + "u"})
        unlabelled = Agent(other, codes=[mine[:2]])
        try:
            agent.ups = unlabelled.ups = ups
            assert await agent.catch_up() == 2
            high, default = settings.queues
            assert queued(queue_redis, settings) == {high: [job_id(settings, uids["mine high"])],
                                                     default: [job_id(settings, uids["mine"])]}
            assert await agent.catch_up() == 0  # already queued
            assert await unlabelled.catch_up() == 3
            found = {j for jobs in queued(queue_redis, unlabelled.settings).values() for j in jobs}
            assert found == {job_id(unlabelled.settings, uids[w]) for w in ("mine", "mine high", "other label")}
        finally:
            agent.redis.close()
            unlabelled.redis.close()



async def test_catch_up_finds_workitems_of_a_long_code(ups_url: str, pacs: str,
                                                       pair: tuple[synthetic.Study, synthetic.Study],
                                                       settings: PerformerSettings, queue_redis: Redis) -> None:
    tag = uuid.uuid4().hex[:8].upper()
    long_code = (f"AIW-LONG-CODE-{tag}", "99AIW", "A code longer than 16 characters")
    short_code = (f"AIW-S-{tag}", "99AIW", "A short code")
    uids = [await create(ups_url, build(pair[0], pacs, code=c)) for c in (long_code, short_code)]
    agent = Agent(settings, codes=[long_code[:2], short_code[:2]])
    try:
        async with UpsClient(ups_url) as ups:
            agent.ups = ups
            assert await agent.catch_up() == 2
        assert set(queued(queue_redis, settings)[settings.queues[1]]) == {job_id(settings, u) for u in uids}
    finally:
        agent.redis.close()


async def test_subscription_filter_of_a_long_code_is_accepted(settings: PerformerSettings) -> None:
    agent = Agent(settings, codes=[("AIW-LONG-CODE-VALUE-X", "99AIW")])
    try:
        async with UpsClient(settings.ups_url) as ups:
            # what Agent._subscribe sends after every (re)connection
            await ups.subscribe(settings.ae_title, filter=agent._filter() or None)
    finally:
        agent.redis.close()
