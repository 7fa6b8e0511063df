"""The PACS triggers against a real Orthanc and the real Task Manager: a stable study
becomes exactly one workitem per procedure, a repeated or resumed trigger never makes a
second one, and a study seen while still arriving goes INCOMPLETE -> READY."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.orthanc as torthanc
from tests.requester_support import CODE, SHAPE, needs_orthanc, runner
from performers import synthetic
from performers.dicomweb import store_instances
from requester_cli import templates as tpl
from requester_cli.cli import app
from requester_cli.qido import Qido
from requester_cli.request import workitem_uid
from requester_cli.watch_dicomweb import DicomwebWatcher
from tests.servers import wait_until
from upsrs import dicomjson as dj
from upsrs.client import UpsClient

pytestmark = needs_orthanc


@pytest.fixture(scope="module")
def orthanc(stable_orthanc: torthanc.Orthanc) -> torthanc.Orthanc:
    return stable_orthanc


@pytest.fixture(scope="module")
def server(module_server_url: str) -> str:
    return module_server_url


def workitems_of(server: str, study_uid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server}/workitems", params={"StudyInstanceUID": study_uid}, timeout=10)
    return r.json() if r.status_code == 200 else []


def wait_stable(orthanc: torthanc.Orthanc, study_uid: str) -> None:
    ids = httpx.post(f"{orthanc.url}/tools/lookup", content=study_uid, timeout=5).json()
    (orthanc_id,) = [i["ID"] for i in ids if i["Type"] == "Study"]
    wait_until(lambda: httpx.get(f"{orthanc.url}/studies/{orthanc_id}", timeout=5).json()["IsStable"],
               timeout=20, what=f"StableStudy of {study_uid}")


def watch_orthanc(orthanc: torthanc.Orthanc, server: str, state: Path, *extra: str) -> Any:
    r = runner.invoke(app, ["watch-orthanc", "--orthanc", orthanc.url, "--server", server, "--state", str(state),
                            "--once", *extra])
    assert r.exit_code == 0, r.output
    return r


def test_watch_orthanc_one_workitem_per_stable_study_and_resumes(orthanc: torthanc.Orthanc, server: str,
                                                                 tmp_path: Path) -> None:
    state = tmp_path / "cursor.json"
    first = watch_orthanc(orthanc, server, state)  # a new watcher starts at the present
    assert first.stdout == "" and json.loads(state.read_text())["last"] >= 0

    a = synthetic.make_study(201, **SHAPE)
    store_instances(orthanc.dicomweb_url, a.flair.datasets)
    wait_stable(orthanc, a.study_uid)
    r = watch_orthanc(orthanc, server, state)
    uid_a = workitem_uid(a.study_uid, CODE)
    assert f"created {uid_a} study {a.study_uid} procedure flair-lesions" in r.stdout
    (wi,) = workitems_of(server, a.study_uid)
    assert dj.first(wi, 0x00404041) == "READY"
    assert {dj.first(i, 0x00081155) for i in dj.items(dj.items(wi, 0x00404021)[0], 0x00081199)} == \
        {str(d.SOPInstanceUID) for d in a.flair.datasets}

    assert watch_orthanc(orthanc, server, state).stdout == ""  # nothing new: nothing done
    b = synthetic.make_study(202, **SHAPE)
    store_instances(orthanc.dicomweb_url, b.flair.datasets)
    wait_stable(orthanc, b.study_uid)
    # a crash before the cursor was written: the watcher sees A's change again
    cursor = json.loads(state.read_text())
    state.write_text(json.dumps({**cursor, "last": 0}))
    r = watch_orthanc(orthanc, server, state)
    assert f"exists {uid_a}" in r.stdout and f"created {workitem_uid(b.study_uid, CODE)}" in r.stdout
    assert len(workitems_of(server, a.study_uid)) == 1 and len(workitems_of(server, b.study_uid)) == 1
    assert json.loads(state.read_text())["last"] > cursor["last"]


def test_watch_orthanc_incomplete_while_arriving_then_ready(orthanc: torthanc.Orthanc, server: str,
                                                             tmp_path: Path) -> None:
    """NewSeries → an INCOMPLETE workitem with the instances so far; StableStudy → the same
    workitem, READY, with every instance."""
    state = tmp_path / "cursor.json"
    watch_orthanc(orthanc, server, state)  # start at the present
    d = synthetic.make_study(204, **SHAPE)
    half = len(d.flair.datasets) // 2
    text = tpl.SAMPLE.read_text().replace("min_instances = 8 ", f"min_instances = {half} ")
    (tmp_path / "t.toml").write_text(text)
    store_instances(orthanc.dicomweb_url, d.flair.datasets[:half])
    r = watch_orthanc(orthanc, server, state, "--templates", str(tmp_path / "t.toml"))
    uid = workitem_uid(d.study_uid, CODE)
    assert f"created {uid} study {d.study_uid} procedure flair-lesions inputs INCOMPLETE" in r.stdout
    (wi,) = workitems_of(server, d.study_uid)
    inputs = dj.items(dj.items(wi, 0x00404021)[0], 0x00081199)
    assert dj.first(wi, 0x00404041) == "INCOMPLETE" and len(inputs) == half

    store_instances(orthanc.dicomweb_url, d.flair.datasets[half:])
    wait_stable(orthanc, d.study_uid)
    r = watch_orthanc(orthanc, server, state, "--templates", str(tmp_path / "t.toml"))
    assert f"readied {uid}" in r.stdout, r.stdout
    (wi,) = workitems_of(server, d.study_uid)
    inputs = dj.items(dj.items(wi, 0x00404021)[0], 0x00081199)
    assert dj.first(wi, 0x00404041) == "READY" and len(inputs) == len(d.flair.datasets)


def test_watch_orthanc_reports_unreachable_and_keeps_cursor(server: str, tmp_path: Path) -> None:
    state = tmp_path / "cursor.json"
    state.write_text(json.dumps({"last": 7}))
    r = runner.invoke(app, ["watch-orthanc", "--orthanc", "http://127.0.0.1:9", "--server", server,
                            "--state", str(state), "--once"])
    assert r.exit_code == 1 and r.stderr.startswith("error: Orthanc http://127.0.0.1:9 is unreachable")
    assert json.loads(state.read_text())["last"] == 7


def test_watch_dicomweb_incomplete_then_ready(orthanc: torthanc.Orthanc, server: str, tmp_path: Path) -> None:
    text = tpl.SAMPLE.read_text().replace("min_instances = 8 ", "min_instances = 2 ")
    (tmp_path / "t.toml").write_text(text)
    templates = tpl.load(tmp_path / "t.toml")
    c = synthetic.make_study(203, study_date="20250601", **SHAPE)
    uid = workitem_uid(c.study_uid, CODE)
    store_instances(orthanc.dicomweb_url, c.flair.datasets[:4])  # still arriving
    t0 = datetime(2025, 6, 1, 12, 0).timestamp()
    now = [t0]
    state = tmp_path / "poll.json"

    def refs(wi: dict[str, Any]) -> int:
        return len(dj.items(dj.items(wi, 0x00404021)[0], 0x00081199))

    async def poll(at: float, fresh: bool = False) -> list[Any]:
        now[0] = at
        async with Qido(orthanc.dicomweb_url) as q, UpsClient(server) as ups:
            w = DicomwebWatcher(q, ups, templates, state, stable_age=30, lookback_days=0, report=lambda s: None,
                                clock=lambda: now[0])
            return [r for r in await w.poll_once() if r.uid == uid]

    (r,) = asyncio.run(poll(t0))
    assert r.action == "created"
    (wi,) = workitems_of(server, c.study_uid)
    assert dj.first(wi, 0x00404041) == "INCOMPLETE" and refs(wi) == 4

    store_instances(orthanc.dicomweb_url, c.flair.datasets[4:])
    assert asyncio.run(poll(t0 + 5)) == []  # grew, still young: the INCOMPLETE one stands
    (r,) = asyncio.run(poll(t0 + 40))  # stable now
    assert r.action == "readied"
    (wi,) = workitems_of(server, c.study_uid)
    assert dj.first(wi, 0x00404041) == "READY" and refs(wi) == 8
    assert dj.first(wi, 0x00741000) == "SCHEDULED"
    assert asyncio.run(poll(t0 + 50)) == []  # remembered in the cursor

    state.unlink()  # cursor lost: the study is seen as new, yet no second workitem
    (r,) = asyncio.run(poll(t0 + 60))
    assert r.action == "exists"
    (r,) = asyncio.run(poll(t0 + 100))
    assert r.action == "exists"
    (wi,) = workitems_of(server, c.study_uid)
    assert dj.first(wi, 0x00404041) == "READY" and refs(wi) == 8


def test_watch_dicomweb_cli_creates_ready_when_stable(orthanc: torthanc.Orthanc, server: str,
                                                     tmp_path: Path) -> None:
    d = synthetic.make_study(204, study_date=datetime.now().strftime("%Y%m%d"), **SHAPE)
    store_instances(orthanc.dicomweb_url, d.flair.datasets)
    args = ["watch-dicomweb", "--pacs", orthanc.dicomweb_url, "--server", server, "--state",
            str(tmp_path / "s.json"), "--stable-age", "0", "--once"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"created {workitem_uid(d.study_uid, CODE)} study {d.study_uid}" in r.stdout
    (wi,) = workitems_of(server, d.study_uid)
    assert dj.first(wi, 0x00404041) == "READY"
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and d.study_uid not in again.stdout
