"""End to end through the real actors: Task Manager on real Redis, Orthanc (DICOMweb) as
the PACS, the performer agent and rq workers as their own processes.

A workitem created → agent → worker → SEG + SR in Orthanc → COMPLETED, with the Output
Information Sequence resolvable by WADO-RS and the lesions found where they truly are;
the oblique study; two workers racing for one workitem; cancel mid-job; a worker killed
mid-job → lease expiry → replacement completes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from redis import Redis
from rq import Queue

from performers import synthetic
from performers.dicomweb import retrieve_series, store_instances
from performers.volumes import load_series
from requester_cli.builder import Procedure, build, study_from_datasets
from tests.orthanc import Orthanc, orthanc_available, start_orthanc
from tests.servers import REPO, RedisProcess, ServerProcess, descendants, start_server, wait_until
from upsrs import dicomjson as dj

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(not orthanc_available(), reason="needs Debian packages orthanc, orthanc-dicomweb")]

LESIONS = ("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
SLOW = ("AIW-SLOW-TEST", "99AIW", "Slow lesion detection (test)")
LEASE = 3.0
SHAPE = dict(shape=(96, 96, 40), spacing=(1.5, 1.5, 2.0))
SLOW_MODEL = """
models:
  - name: slow-lesions
    version: "0.1"
    manufacturer: aiw tests
    workitem_code: {value: AIW-SLOW-TEST, scheme: 99AIW, meaning: Slow lesion detection (test)}
    inputs: [{role: current, modality: MR}]
    command: ["%(python)s", "-c", "import runpy, sys, time; time.sleep(%(sleep)s); sys.argv = ['m'] + sys.argv[1:]; runpy.run_module('performers.models.example_external', run_name='__main__')", "{input}", "{output}"]
    timeout: 60
"""


@dataclass
class Stack:
    server: ServerProcess
    pacs: Orthanc
    env: dict[str, str]
    tmp: Path
    agent: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    started: int = 0

    def start(self, *args: str, name: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "aiw.cli", "performer", *args], cwd=REPO, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_worker(self) -> subprocess.Popen:
        self.started += 1
        w = self.start("worker", "--name", f"w{self.started}-{os.getpid()}", name=f"worker{self.started}")
        self.workers.append(w)
        return w

    @property
    def queue(self) -> Redis:
        return Redis.from_url(self.env["AIW_QUEUE_URL"])


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()




def _crash(proc: subprocess.Popen) -> None:
    """kill -9 a worker with everything it started, as a machine that dies would."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.fixture(scope="module")
def stack(redis_proc: RedisProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e")
    pacs = start_orthanc(tmp / "orthanc")
    server = start_server(redis_proc.url, extra_env={"AIW_LEASE_SECONDS": str(LEASE)}, log_dir=tmp)
    models = tmp / "models.yaml"
    models.write_text(SLOW_MODEL % {"python": sys.executable, "sleep": 3})
    env = {**os.environ, "AIW_UPS_URL": server.url, "AIW_QUEUE_URL": redis_proc.url,
           "AIW_QUEUE_PREFIX": f"e2e{server.port}", "AIW_AE_TITLE": f"PERF{server.port}",
           "AIW_MODELS": '["aiw-flair-lesions"]', "AIW_EXTERNAL_MODELS": str(models),
           "AIW_CATCHUP_INTERVAL": "2", "AIW_HEARTBEAT_SECONDS": "0.5", "AIW_STOW_URL": pacs.dicomweb_url,
           "AIW_WORK_DIR": str(tmp / "work"), "AIW_LOG_JSON": "true"}
    (tmp / "work").mkdir()
    s = Stack(server, pacs, env, tmp)
    s.agent = s.start("agent", name="agent")
    s.start_worker()
    yield s
    for w in s.workers:
        _stop(w)
    if s.agent:
        _stop(s.agent)
    server.stop()
    pacs.stop()


# ---------------------------------------------------------------------- helpers
def store(stack: Stack, study: synthetic.Study) -> None:
    stored = store_instances(stack.pacs.dicomweb_url, study.flair.datasets, timeout=60, retries=2)
    assert len(stored) == len(study.flair.datasets)


def create(stack: Stack, study: synthetic.Study, *, code: tuple[str, str, str] = LESIONS,
           prior: synthetic.Study | None = None, priority: str = "MEDIUM") -> str:
    ref = study_from_datasets(study.flair.datasets, stack.pacs.dicomweb_url)
    prior_series = study_from_datasets(prior.flair.datasets, stack.pacs.dicomweb_url).series if prior else ()
    doc = build(ref, Procedure(code, "MS lesion follow-up", worklist_label="AI", priority=priority),
                ref.series, prior=prior_series)
    r = httpx.post(f"{stack.server.url}/workitems", content=json.dumps(doc),
                   headers={"content-type": "application/dicom+json"})
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def workitem(stack: Stack, uid: str) -> dict[str, Any]:
    r = httpx.get(f"{stack.server.url}/workitems/{uid}")
    assert r.status_code == 200, r.text
    return r.json()[0]


def state(stack: Stack, uid: str) -> str:
    return dj.first(workitem(stack, uid), 0x00741000)


def progress_text(doc: dict[str, Any]) -> str:
    items = dj.items(doc, 0x00741002)
    return str(dj.first(items[0], 0x00741006, "")) if items else ""


def wait_final(stack: Stack, uid: str, timeout: float = 90) -> dict[str, Any]:
    wait_until(lambda: state(stack, uid) in ("COMPLETED", "CANCELED"), timeout=timeout, what=f"workitem {uid} final")
    return workitem(stack, uid)


def outputs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    (performed,) = dj.items(doc, 0x00741216)
    return dj.items(performed, 0x00404033)


def fetch_outputs(doc: dict[str, Any], dest: Path) -> dict[str, pydicom.Dataset]:
    """The objects the Output Information Sequence lists, retrieved by its WADO-RS URLs."""
    found: dict[str, pydicom.Dataset] = {}
    for n, item in enumerate(outputs(doc)):
        (url,) = [dj.first(r, 0x00081190) for r in dj.items(item, 0x0040E025)]
        files = retrieve_series(url, dest / str(n), timeout=30, retries=2, backoff=0.2)
        listed = {dj.first(r, 0x00081155) for r in dj.items(item, 0x00081199)}
        for path in files:
            ds = pydicom.dcmread(path)
            assert ds.SOPInstanceUID in listed
            found[ds.Modality] = ds
    return found


def summary(sr: pydicom.Dataset) -> dict[str, float]:
    report = hd.sr.srread(_bytes(sr)).content
    (group,) = report.get_image_measurement_groups()
    return {m.name.meaning: float(m.value) for m in group.get_measurements()}


def _bytes(ds: pydicom.Dataset):  # type: ignore[no-untyped-def]
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return buf


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def check_lesions_found(stack: Stack, study: synthetic.Study, seg: pydicom.Dataset, tmp: Path) -> float:
    """SEG (as stored in the PACS) against the generator's truth, in the source geometry."""
    source = retrieve_series(f"{stack.pacs.dicomweb_url}/studies/{study.study_uid}/series/{study.flair.series_uid}",
                             tmp / "source", timeout=30, retries=2, backoff=0.2)
    volume, _ = load_series(source)
    segmentation = hd.seg.segread(_bytes(seg))
    found = segmentation.get_volume(combine_segments=True).match_geometry(volume).array
    truth = synthetic.truth_labels(study, volume)
    return dice(found, truth)


# ---------------------------------------------------------------------- tests
def test_workitem_to_seg_and_sr_in_the_pacs(stack: Stack, tmp_path: Path) -> None:
    current, prior = synthetic.make_pair(11, **SHAPE)
    store(stack, prior)
    store(stack, current)
    uid = create(stack, current, prior=prior)
    doc = wait_final(stack, uid)
    assert dj.first(doc, 0x00741000) == "COMPLETED", progress_text(doc)

    (performed,) = dj.items(doc, 0x00741216)
    assert [dj.first(c, 0x00080100) for c in dj.items(performed, 0x00404019)] == [LESIONS[0]]
    assert dj.first(performed, 0x00404050) and dj.first(performed, 0x00404051)
    assert dj.items(performed, 0x00404028), "Performed Station Name Code Sequence"

    objects = fetch_outputs(doc, tmp_path)
    assert set(objects) == {"SEG", "SR"}
    for ds in objects.values():  # filed in the current study, links intact
        assert ds.StudyInstanceUID == current.study_uid
        assert (ds.AccessionNumber, ds.PatientID, ds.IssuerOfPatientID) == (
            current.accession, current.patient_id, current.patient_id_issuer)
        assert ds.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == current.accession_issuer

    assert check_lesions_found(stack, current, objects["SEG"], tmp_path) >= 0.9
    values = summary(objects["SR"])
    assert values["Number of lesions"] == len(current.lesions)
    assert values["Change in number of lesions since prior"] == len(current.lesions) - len(prior.lesions)
    assert objects["SR"].CompletionFlag == "PARTIAL" and objects["SR"].VerificationFlag == "UNVERIFIED"


def test_oblique_acquisition(stack: Stack, tmp_path: Path) -> None:
    study = synthetic.make_study(12, oblique=True, n_lesions=4, **SHAPE)
    store(stack, study)
    doc = wait_final(stack, create(stack, study))
    assert dj.first(doc, 0x00741000) == "COMPLETED", progress_text(doc)
    objects = fetch_outputs(doc, tmp_path)
    assert check_lesions_found(stack, study, objects["SEG"], tmp_path) >= 0.9
    assert summary(objects["SR"])["Number of lesions"] == 4


def test_two_workers_racing_for_one_workitem(stack: Stack) -> None:
    """Two jobs for one workitem on two workers: one claim wins, the other drops it."""
    study = synthetic.make_study(13, n_lesions=2, **SHAPE)
    store(stack, study)
    second = stack.start_worker()
    try:
        # the agent queues a job of its own too: three jobs race for one claim
        uid = create(stack, study)
        queue = Queue(f"{stack.env['AIW_QUEUE_PREFIX']}-default", connection=stack.queue)
        jobs = [queue.enqueue("performers.job.perform", uid, job_id=f"race-{n}-{uid.replace('.', '_')}") for n in range(2)]
        wait_until(lambda: all(j.get_status(refresh=True) in ("finished", "failed") for j in jobs), timeout=90,
                   what="both racing jobs")
        outcomes = sorted(j.return_value()["outcome"] for j in jobs)
        assert outcomes.count("completed") <= 1
        assert wait_final(stack, uid)["00741000"]["Value"] == ["COMPLETED"]
        assert outcomes.count("lost-race") + outcomes.count("skipped") >= 1
    finally:
        _stop(second)
        stack.workers.remove(second)


def test_cancel_requested_mid_job(stack: Stack) -> None:
    study = synthetic.make_study(14, n_lesions=2, **SHAPE)
    store(stack, study)
    uid = create(stack, study, code=SLOW)
    wait_until(lambda: progress_text(workitem(stack, uid)) == "Running the model", timeout=60, what="model stage")
    r = httpx.post(f"{stack.server.url}/workitems/{uid}/cancelrequest?requester=QA_DESK",
                   content=json.dumps({"00741238": {"vr": "LT", "Value": ["wrong patient"]}}),
                   headers={"content-type": "application/dicom+json"})
    assert r.status_code == 202, r.text
    doc = wait_final(stack, uid)
    assert dj.first(doc, 0x00741000) == "CANCELED"
    (item,) = dj.items(doc, 0x00741002)
    reason = dj.first(item, 0x00741238)
    assert "QA_DESK" in reason and "wrong patient" in reason and "encode" in reason
    assert not dj.items(doc, 0x00741216) or not outputs(doc)


def test_worker_killed_mid_job_is_replaced_and_completed(stack: Stack) -> None:
    study = synthetic.make_study(15, n_lesions=2, **SHAPE)
    store(stack, study)
    uid = create(stack, study, code=SLOW)
    wait_until(lambda: progress_text(workitem(stack, uid)) == "Running the model", timeout=60, what="model stage")
    victim = stack.workers[0]
    _crash(victim)
    stack.workers.remove(victim)
    stack.start_worker()
    doc = wait_final(stack, uid, timeout=LEASE * 10)
    assert dj.first(doc, 0x00741000) == "CANCELED"
    (item,) = dj.items(doc, 0x00741002)
    assert "stopped reporting" in dj.first(item, 0x00741238)
    replacement = [d for d in httpx.get(f"{stack.server.url}/workitems",
                                        params={"includefield": "00741224"}).json()
                   if uid in json.dumps(d.get("00741224", {}))]
    assert len(replacement) == 1
    new = dj.first(replacement[0], 0x00080018)
    done = wait_final(stack, new)
    assert dj.first(done, 0x00741000) == "COMPLETED", progress_text(done)
    assert {dj.first(i, 0x0020000D) for i in outputs(done)} == {study.study_uid}
