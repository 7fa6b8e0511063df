"""The AIW-I pull loop over real HTTP: create, find, claim, progress, complete."""

from __future__ import annotations

import httpx
import orjson

from tests.factory import performed, progress, state, workitem


def _uid(resp: httpx.Response) -> str:
    return resp.headers["location"].rsplit("/", 1)[1]


def test_full_lifecycle(client: httpx.Client) -> None:
    created = client.post("/workitems", content=orjson.dumps(workitem(patient_id="LIFE-1")))
    assert created.status_code == 201, created.text
    uid = _uid(created)
    assert created.headers["content-location"] == created.headers["location"]
    found = client.get("/workitems", params={"PatientID": "LIFE-1", "ProcedureStepState": "SCHEDULED"})
    assert [r["00080018"]["Value"][0] for r in found.json()] == [uid]
    tuid = "2.25.1234567"
    assert client.put(f"/workitems/{uid}/state", content=orjson.dumps(state("IN PROGRESS", tuid))).status_code == 200
    assert client.post(f"/workitems/{uid}?transaction-uid={tuid}", content=orjson.dumps(progress(40, "model"))).status_code == 200
    assert client.post(f"/workitems/{uid}?transaction-uid={tuid}", content=orjson.dumps(performed())).status_code == 200
    done = client.put(f"/workitems/{uid}/state", content=orjson.dumps(state("COMPLETED", tuid)))
    assert done.status_code == 200 and "warning" not in done.headers
    got = client.get(f"/workitems/{uid}").json()[0]
    assert got["00741000"]["Value"] == ["COMPLETED"]
    assert got["00741002"]["Value"][0]["00741004"]["Value"] == ["40"]
    assert "00081195" not in got
