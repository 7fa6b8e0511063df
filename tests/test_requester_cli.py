"""The Task Requester against a real Orthanc (DICOMweb plugin) and the real Task Manager:
what a user sees (CLI output, exit codes) and the workitems read back from the server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import tests.orthanc as torthanc
from tests.requester_support import CODE, SHAPE, needs_orthanc, runner
from performers import synthetic
from performers.dicomweb import store_instances
from requester_cli import templates as tpl
from requester_cli.cli import app
from requester_cli.request import workitem_uid
from tests.servers import free_port, start_server
from upsrs import dicomjson as dj

pytestmark = needs_orthanc


@pytest.fixture(scope="module")
def orthanc(stable_orthanc: torthanc.Orthanc) -> torthanc.Orthanc:
    return stable_orthanc


@pytest.fixture(scope="module")
def server(module_server_url: str) -> str:
    return module_server_url


def cli(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    return result


def store(orthanc: torthanc.Orthanc, study: synthetic.Study) -> synthetic.Study:
    store_instances(orthanc.dicomweb_url, study.flair.datasets, timeout=30)
    return study


def workitems_of(server: str, study_uid: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{server}/workitems", params={"StudyInstanceUID": study_uid}, timeout=10)
    return r.json() if r.status_code == 200 else []


def retrieve(server: str, uid: str) -> dict[str, Any]:
    r = httpx.get(f"{server}/workitems/{uid}", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    return body[0] if isinstance(body, list) else body


def code_values(ds: dict[str, Any], tag: int) -> tuple[str, str, str]:
    item = dj.items(ds, tag)[0]
    return (dj.first(item, 0x00080100), dj.first(item, 0x00080102), dj.first(item, 0x00080104))


# ---------------------------------------------------------------- create

def test_create_links_study_patient_accession_series_and_instances(orthanc: torthanc.Orthanc, server: str) -> None:
    study = store(orthanc, synthetic.make_study(101, **SHAPE))
    r = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["action"] == "created" and out["uid"] == workitem_uid(study.study_uid, CODE)
    ds = retrieve(server, out["uid"])
    first = study.flair.datasets[0]
    assert dj.first(ds, 0x0020000D) == study.study_uid
    assert dj.first(ds, 0x00100020) == study.patient_id and dj.first(ds, 0x00100021) == study.patient_id_issuer
    assert dj.first(ds, 0x00100010) == {"Alphabetic": study.patient_name}
    assert dj.first(ds, 0x00100030) == first.PatientBirthDate and dj.first(ds, 0x00100040) == first.PatientSex
    req = dj.items(ds, 0x0040A370)[0]
    assert dj.first(req, 0x0020000D) == study.study_uid
    assert dj.first(req, 0x00080050) == study.accession
    assert dj.first(dj.items(req, 0x00080051)[0], 0x00400031) == study.accession_issuer
    assert dj.first(req, 0x00401001) == study.accession  # no Requested Procedure ID in the images: the accession
    (inp,) = dj.items(ds, 0x00404021)
    assert dj.first(inp, 0x0020000E) == study.flair.series_uid
    refs = {(dj.first(i, 0x00081150), dj.first(i, 0x00081155)) for i in dj.items(inp, 0x00081199)}
    assert refs == {(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in study.flair.datasets}
    url = dj.first(dj.items(inp, 0x0040E025)[0], 0x00081190)
    assert url == f"{orthanc.dicomweb_url}/studies/{study.study_uid}/series/{study.flair.series_uid}"
    assert httpx.get(url + "/metadata", timeout=10).status_code == 200  # the link works
    assert code_values(ds, 0x00404018) == CODE
    assert code_values(ds, 0x00404025)[0] == "AIW-REF"
    assert dj.first(ds, 0x00741202) == "AI-NEURO" and dj.first(ds, 0x00741204) == "FLAIR lesion detection"
    assert dj.first(ds, 0x00741200) == "MEDIUM" and dj.first(ds, 0x00404041) == "READY"
    assert dj.first(ds, 0x00404011) > dj.first(ds, 0x00404005)  # expected completion after the start
    params = {dj.first(dj.items(p, 0x0040A043)[0], 0x00080100):
              (float(dj.first(p, 0x0040A30A)), dj.first(dj.items(p, 0x004008EA)[0], 0x00080100))
              for p in dj.items(ds, 0x00741210)}
    assert params == {"threshold_factor": (5.0, "1"), "min_lesion_mm3": (10.0, "mm3")}

    again = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server)
    assert again.exit_code == 0 and again.stdout.strip() == out["uid"]
    assert "already exists" in again.stderr
    assert len(workitems_of(server, study.study_uid)) == 1


def test_with_prior_picks_the_latest_earlier_study_of_the_same_patient(orthanc: torthanc.Orthanc,
                                                                        server: str) -> None:
    current, prior = synthetic.make_pair(102, **SHAPE)
    older = synthetic.make_study(102, patient=current, study_date="20240101", **SHAPE)
    later = synthetic.make_study(102, patient=current, study_date="20270101", **SHAPE)  # after the current one
    stranger = synthetic.make_study(103, study_date="20261001", **SHAPE)  # another patient, closer in time
    for s in (older, prior, later, stranger, current):
        store(orthanc, s)
    r = cli("create", current.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server, "--with-prior",
            "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["prior"] == prior.study_uid
    ds = retrieve(server, out["uid"])
    inputs = {(dj.first(i, 0x0020000D), dj.first(i, 0x0020000E)) for i in dj.items(ds, 0x00404021)}
    assert inputs == {(current.study_uid, current.flair.series_uid), (prior.study_uid, prior.flair.series_uid)}
    assert dj.first(ds, 0x0020000D) == current.study_uid  # results belong to the current study


def test_stat_series_description_makes_it_high(orthanc: torthanc.Orthanc, server: str) -> None:
    study = synthetic.make_study(104, **SHAPE)
    for d in study.flair.datasets:
        d.SeriesDescription = "AX 3D FLAIR STAT"
    store(orthanc, study)
    r = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["priority"] == "HIGH" and "SeriesDescription" in out["stat"]
    assert dj.first(retrieve(server, out["uid"]), 0x00741200) == "HIGH"


def test_parameter_override_is_typed(orthanc: torthanc.Orthanc, server: str) -> None:
    study = store(orthanc, synthetic.make_study(105, **SHAPE))
    bad = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server,
              "--param", "threshold_factor=lots")
    assert bad.exit_code == 1 and "threshold_factor" in bad.stderr and "numeric" in bad.stderr
    assert workitems_of(server, study.study_uid) == []
    ok = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server,
             "--param", "threshold_factor=4.5")
    assert ok.exit_code == 0, ok.output
    ds = retrieve(server, ok.stdout.strip())
    values = {dj.first(dj.items(p, 0x0040A043)[0], 0x00080100): dj.first(p, 0x0040A30A)
              for p in dj.items(ds, 0x00741210)}
    assert float(values["threshold_factor"]) == 4.5


# ---------------------------------------------------------------- bad input

def one_line_error(r: Any, *words: str) -> None:
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_unknown_study(orthanc: torthanc.Orthanc, server: str) -> None:
    r = cli("create", "1.2.3.4.5.6", "--pacs", orthanc.dicomweb_url, "--server", server)
    one_line_error(r, "1.2.3.4.5.6", "not on PACS")
    assert workitems_of(server, "1.2.3.4.5.6") == []


def test_pacs_unreachable(server: str) -> None:
    r = cli("create", "1.2.3.4", "--pacs", f"http://127.0.0.1:{free_port()}/dicom-web", "--server", server)
    one_line_error(r, "unreachable")


def test_no_series_matches_the_template(orthanc: torthanc.Orthanc, server: str, tmp_path: Path) -> None:
    study = store(orthanc, synthetic.make_study(106, **SHAPE))
    text = tpl.SAMPLE.read_text().replace('min_instances = 8 ', 'min_instances = 50 ')
    (tmp_path / "t.toml").write_text(text)
    r = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server,
            "--templates", str(tmp_path / "t.toml"))
    one_line_error(r, "no series", "flair-lesions", "8 instances, fewer than 50")
    assert workitems_of(server, study.study_uid) == []


def test_invalid_template_names_file_procedure_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(tpl.SAMPLE.read_text().replace('modality = "MR"', 'modality = ""')
                   .replace('value = 5.0', 'value = "five"'))
    with pytest.raises(tpl.TemplateError) as err:
        tpl.load(bad)
    msg = str(err.value)
    assert str(bad) in msg and "procedure 'flair-lesions'" in msg
    assert "field inputs.modality" in msg and "parameters[0]" in msg and "numeric" in msg
    r = cli("create", "1.2.3", "--pacs", "http://127.0.0.1:1/x", "--server", "http://127.0.0.1:1",
            "--templates", str(bad))
    one_line_error(r, str(bad), "flair-lesions", "inputs.modality")
    bad.write_text("[[procedure]]\nname = 'x'\n")
    with pytest.raises(tpl.TemplateError, match=r"procedure 'x', field label: Field required"):
        tpl.load(bad)
    bad.write_text("[[procedure\n")
    with pytest.raises(tpl.TemplateError, match="not valid TOML"):
        tpl.load(bad)


def test_server_refusing_leaves_nothing(orthanc: torthanc.Orthanc, redis_proc: Any) -> None:
    study = store(orthanc, synthetic.make_study(107, **SHAPE))
    small = start_server(redis_proc.url, extra_env={"AIW_MAX_BODY_BYTES": "1500"})
    try:
        r = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", small.url)
        one_line_error(r, small.url, "refused the create", "HTTP 413")
        assert workitems_of(small.url, study.study_uid) == []
    finally:
        small.stop()
    r = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", f"http://127.0.0.1:{free_port()}")
    one_line_error(r, "Task Manager", "unreachable")


def test_templates_command_lists_the_sample() -> None:
    r = cli("templates")
    assert r.exit_code == 0, r.output
    assert "flair-lesions" in r.stdout and "AIW-FLAIR-LES" in r.stdout and "threshold_factor = 5.0" in r.stdout
    data = json.loads(cli("templates", "--json").stdout)
    assert data[0]["code"]["value"] == "AIW-FLAIR-LES"


# ---------------------------------------------------------------- list / show / cancel / follow

def test_list_show_cancel_follow(orthanc: torthanc.Orthanc, server: str) -> None:
    study = store(orthanc, synthetic.make_study(108, **SHAPE))
    uid = cli("create", study.study_uid, "--pacs", orthanc.dicomweb_url, "--server", server).stdout.strip()
    rows = json.loads(cli("list", "--server", server, "--patient", study.patient_id, "--json").stdout)
    assert [r["uid"] for r in rows] == [uid]
    assert rows[0]["accession"] == study.accession and rows[0]["procedure"] == "FLAIR lesion detection"
    today = time.strftime("%Y-%m-%d")
    table = cli("list", "--server", server, "--study", study.study_uid, "--procedure", "flair-lesions",
                "--state", "SCHEDULED", "--from", today, "--to", today)
    assert table.exit_code == 0 and uid in table.stdout and study.accession in table.stdout
    none = cli("list", "--server", server, "--study", study.study_uid, "--state", "COMPLETED")
    assert none.exit_code == 0 and "no workitems match" in none.stderr

    shown = cli("show", uid, "--server", server)
    assert shown.exit_code == 0, shown.output
    for expected in ("Accession", study.accession, synthetic.ISSUER_OF_ACCESSION, study.patient_id,
                     f"issuer {study.patient_id_issuer}", "FLAIR hyperintense lesion detection",
                     f"{orthanc.dicomweb_url}/studies/{study.study_uid}/series/{study.flair.series_uid}",
                     "8 instances", "Minimum lesion volume (mm3) = 10 mm3"):
        assert expected in shown.stdout, expected
    assert "0020000D" not in shown.stdout  # names, not tags

    # `follow` as its own process: CliRunner swaps sys.stdout process-wide, so two
    # concurrent invocations in threads would mix their output
    follower = subprocess.Popen([sys.executable, "-m", "aiw.cli", "request", "follow", uid, "--server", server,
                                 "--timeout", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = follower.stdout.readline()  # printed once subscribed and the state is read
    assert first.startswith("state SCHEDULED"), first + follower.stderr.read()
    c = cli("cancel", uid, "--server", server, "--reason", "wrong patient")
    assert c.exit_code == 0 and "cancellation requested" in c.stdout
    rest, err = follower.communicate(timeout=60)
    followed = SimpleNamespace(exit_code=follower.returncode, stdout=first + rest, output=first + rest + err)
    assert followed.exit_code == 3, followed.output
    assert "state CANCELED" in followed.stdout, followed.output
    assert "final state: CANCELED" in followed.stdout and "reason: wrong patient" in followed.stdout
    assert dj.first(retrieve(server, uid), 0x00741000) == "CANCELED"
    missing = cli("show", "1.2.3.999", "--server", server)
    one_line_error(missing, "HTTP 404")


def test_follow_and_show_a_completed_workitem_list_its_results(server: str) -> None:
    """What a requester sees once the AI is done: the outputs as links and the parameters
    the performer actually used."""
    from tests import factory as f
    from upsrs.uids import new_uid

    uid, tuid, study, series = new_uid(), new_uid(), new_uid(), new_uid()
    http = httpx.Client(base_url=server, headers={"content-type": "application/dicom+json"}, timeout=10)
    assert http.post(f"/workitems?{uid}", json=f.workitem(study_uid=study)).status_code == 201
    assert http.put(f"/workitems/{uid}/state", json=f.state("IN PROGRESS", tuid)).status_code == 200
    url = f"http://pacs.example/dicom-web/studies/{study}/series/{series}"
    output = {"0040E020": f.v("CS", "DICOM"), "0020000D": f.v("UI", study), "0020000E": f.v("UI", series),
              "00081199": f.sq({"00081150": f.v("UI", "1.2.840.10008.5.1.4.1.1.66.4"), "00081155": f.v("UI", new_uid())}),
              "0040E025": f.sq({"00081190": f.v("UR", url)})}
    done = f.performed(outputs=[output])
    done["00741216"]["Value"][0]["00741212"] = f.sq({
        "0040A040": f.v("CS", "NUMERIC"), "0040A043": f.sq(f.code("min_lesion_mm3", "99AIW", "Minimum lesion volume")),
        "0040A30A": f.v("DS", "25"), "004008EA": f.sq(f.code("mm3", "UCUM", "cubic millimeter"))})
    assert http.post(f"/workitems/{uid}?{tuid}", json=done).status_code == 200
    assert http.put(f"/workitems/{uid}/state", json=f.state("COMPLETED", tuid)).status_code == 200

    followed = cli("follow", uid, "--server", server, "--timeout", "20")
    assert followed.exit_code == 0, followed.output
    assert "final state: COMPLETED" in followed.stdout
    assert url in followed.stdout and "performed with Minimum lesion volume = 25 mm3" in followed.stdout
    shown = cli("show", uid, "--server", server)
    assert shown.exit_code == 0 and url in shown.stdout
