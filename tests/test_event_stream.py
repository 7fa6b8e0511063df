"""Every change writes its events (PS3.4 CC.2.4.3) to the Redis Stream in the same step."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.factory import code, performed, progress, sq, state, v, workitem
from typing import Iterator

from tests.servers import RedisProcess, ServerProcess, start_server


def _events(redis_proc: RedisProcess, prefix: str, uid: str) -> list[tuple[int, dict]]:
    r = redis_proc.client()
    out = []
    for _id, fields in r.xrange(f"{prefix}events"):
        if fields[b"uid"].decode() == uid and not fields.get(b"to"):  # not the targeted initial reports
            out.append((int(fields[b"type"]), orjson.loads(fields[b"body"])))
    return out


@pytest.fixture(scope="module")
def own_server(redis_proc: RedisProcess) -> Iterator[ServerProcess]:
    """A server of this module's own (own key prefix): no other test's subscribers."""
    srv = start_server(redis_proc.url)
    yield srv
    srv.stop()


@pytest.fixture
def prefix(own_server: ServerProcess) -> str:
    return own_server.env["AIW_KEY_PREFIX"]


@pytest.fixture
def redis_client(own_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=own_server.url, headers={"content-type": "application/dicom+json"}) as c:
        yield c


def test_events_of_a_whole_life(redis_client: httpx.Client, redis_proc: RedisProcess, prefix: str) -> None:
    wi = workitem(readiness="INCOMPLETE")
    wi["00404034"] = sq({"00404009": sq(code("RAD1", "99HOSP", "Radiologist one")),
                         "00404037": v("PN", {"Alphabetic": "HOUSE^G"}), "00404036": v("LO", "HOSP")})
    uid = redis_client.post("/workitems", content=orjson.dumps(wi)).headers["location"].rsplit("/", 1)[1]
    ev = _events(redis_proc, prefix, uid)
    assert [t for t, _ in ev] == [1, 5]
    assert ev[0][1]["00741000"]["Value"] == ["SCHEDULED"] and ev[0][1]["00404041"]["Value"] == ["INCOMPLETE"]
    assert ev[1][1]["00404009"]["Value"][0]["00080100"]["Value"] == ["RAD1"]
    assert ev[1][1]["00404025"]["Value"][0]["00080100"]["Value"] == ["AIW-NODE-1"]

    assert redis_client.post(f"/workitems/{uid}", content=orjson.dumps({"00404041": v("CS", "READY")})).status_code == 200
    assert redis_client.post(f"/workitems/{uid}", content=orjson.dumps({"00741200": v("CS", "HIGH")})).status_code == 200
    ev = _events(redis_proc, prefix, uid)
    assert [t for t, _ in ev] == [1, 5, 1]  # readiness change reports; a priority change does not
    assert ev[2][1]["00404041"]["Value"] == ["READY"]

    tuid = "2.25.77"
    redis_client.put(f"/workitems/{uid}/state", content=orjson.dumps(state("IN PROGRESS", tuid)))
    redis_client.post(f"/workitems/{uid}?{tuid}", content=orjson.dumps(progress(30, "retrieving")))
    nobody = redis_client.post(f"/workitems/{uid}/cancelrequest/ORDERS_AE")
    assert nobody.status_code == 409 and nobody.headers.get_list("warning")[0].endswith("The performer cannot be contacted.")
    assert redis_client.post(f"/workitems/{uid}/subscribers/PERFORMER").status_code == 201
    redis_client.post(f"/workitems/{uid}/cancelrequest/ORDERS_AE",
                      content=orjson.dumps({"00741238": v("LT", "patient moved"), "0074100A": v("UR", "tel:+4912345")}))
    redis_client.post(f"/workitems/{uid}?{tuid}", content=orjson.dumps(performed()))
    redis_client.put(f"/workitems/{uid}/state", content=orjson.dumps(state("COMPLETED", tuid)))
    ev = _events(redis_proc, prefix, uid)
    assert [t for t, _ in ev] == [1, 5, 1, 1, 3, 2, 1]
    assert ev[3][1]["00741000"]["Value"] == ["IN PROGRESS"]
    assert ev[4][1]["00741002"]["Value"][0]["00741004"]["Value"] == ["30"]
    assert ev[5][1]["00741236"]["Value"] == ["ORDERS_AE"]
    assert ev[5][1]["00741238"]["Value"] == ["patient moved"] and ev[5][1]["0074100A"]["Value"] == ["tel:+4912345"]
    assert ev[6][1]["00741000"]["Value"] == ["COMPLETED"]


def test_cancel_request_on_scheduled_reports_in_progress_then_canceled(
        redis_client: httpx.Client, redis_proc: RedisProcess, prefix: str) -> None:
    uid = redis_client.post("/workitems", content=orjson.dumps(workitem(station=None))).headers["location"].rsplit("/", 1)[1]
    code_seq = sq(code("110514", "DCM", "Incorrect worklist entry selected"))
    r = redis_client.post(f"/workitems/{uid}/cancelrequest?requester=RIS",
                          content=orjson.dumps({"0074100E": code_seq, "00741238": v("LT", "wrong patient")}))
    assert r.status_code == 202
    ev = _events(redis_proc, prefix, uid)
    assert [(t, b["00741000"]["Value"][0]) for t, b in ev] == [(1, "SCHEDULED"), (1, "IN PROGRESS"), (1, "CANCELED")]
    final = ev[-1][1]
    assert final["0074100E"]["Value"][0]["00080100"]["Value"] == ["110514"]
    assert final["00741238"]["Value"] == ["wrong patient"]


def test_refused_changes_write_no_event(redis_client: httpx.Client, redis_proc: RedisProcess, prefix: str) -> None:
    uid = redis_client.post("/workitems", content=orjson.dumps(workitem())).headers["location"].rsplit("/", 1)[1]
    before = _events(redis_proc, prefix, uid)
    assert redis_client.put(f"/workitems/{uid}/state", content=orjson.dumps(state("COMPLETED", "2.25.1"))).status_code == 409
    assert redis_client.post(f"/workitems/{uid}?2.25.1", content=orjson.dumps(progress(5))).status_code == 409
    assert redis_client.post(f"/workitems/{uid}", content=orjson.dumps({"00100010": v("PN", {"Alphabetic": "X"})})).status_code == 400
    assert _events(redis_proc, prefix, uid) == before
