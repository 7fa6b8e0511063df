"""HTTP-level rules: media types, size limits, content negotiation, service prefix,
OpenAPI, request ids and the structured log line."""

from __future__ import annotations

import httpx
import orjson

from tests.factory import workitem
from tests.servers import RedisProcess, start_server


def test_unsupported_content_type_is_415(client: httpx.Client) -> None:
    r = client.post("/workitems", content=b"<NativeDicomModel/>", headers={"content-type": "application/dicom+xml"})
    assert r.status_code == 415 and r.headers["warning"].startswith("299 ")


def test_accept_without_json_is_406(client: httpx.Client) -> None:
    r = client.get("/workitems", headers={"accept": "application/dicom+xml"})
    assert r.status_code == 406
    assert client.get("/workitems", params={"PatientID": "X"}, headers={"accept": "application/json, */*"}).status_code in (200, 204)


def test_oversized_body_is_413_and_nothing_is_stored(client: httpx.Client) -> None:
    ds = workitem(patient_id="BIG-1")
    ds["00400400"] = {"vr": "LT", "Value": ["x" * 10000]}
    ds["00404001"] = {"vr": "LT", "Value": ["y" * (5 * 1024 * 1024)]}
    r = client.post("/workitems", content=orjson.dumps(ds))
    assert r.status_code == 413
    assert client.get("/workitems", params={"PatientID": "BIG-1"}).status_code == 204


def test_body_array_of_one_and_bare_object_both_accepted(client: httpx.Client) -> None:
    assert client.post("/workitems", content=orjson.dumps([workitem()])).status_code == 201
    assert client.post("/workitems", content=orjson.dumps(workitem())).status_code == 201
    two = client.post("/workitems", content=orjson.dumps([workitem(), workitem()]))
    assert two.status_code == 400 and "one dataset" in two.headers["warning"]


def test_request_id_echoed(client: httpx.Client) -> None:
    r = client.get("/workitems/1.2.3.4", headers={"x-request-id": "abc123"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "abc123"


def test_openapi_lists_every_transaction(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/workitems"]) == {"get", "post"}
    assert set(paths["/workitems/{uid}"]) == {"get", "post"}
    assert "put" in paths["/workitems/{uid}/state"] and "post" in paths["/workitems/{uid}/cancelrequest"]


def test_path_prefix_and_log_line(redis_proc: RedisProcess) -> None:
    srv = start_server(redis_proc.url, extra_env={"AIW_PATH_PREFIX": "/dicom-web"})
    try:
        with httpx.Client(base_url=srv.url, headers={"content-type": "application/dicom+json"}) as c:
            r = c.post("/dicom-web/workitems", content=orjson.dumps(workitem()), headers={"x-request-id": "log-me"})
            assert r.status_code == 201
            assert r.headers["location"].startswith(f"{srv.url}/dicom-web/workitems/")
            uid = r.headers["location"].rsplit("/", 1)[1]
            assert c.post("/workitems", content=orjson.dumps(workitem())).status_code == 404
            warned = c.post("/dicom-web/workitems", content=orjson.dumps(workitem(readiness="MAYBE")))
            assert warned.headers["warning"].startswith(f"299 {srv.url}/dicom-web: ")
        lines = [orjson.loads(x) for x in srv.log.read_bytes().splitlines() if x.startswith(b"{")]  # type: ignore[union-attr]
        mine = [x for x in lines if x.get("request_id") == "log-me"]
        assert mine and mine[0]["workitem"] == uid and mine[0]["status"] == 201 and mine[0]["outcome"] == "0000"
    finally:
        srv.stop()


def test_non_ascii_in_a_refused_value_is_a_400_with_an_ascii_warning(client: httpx.Client) -> None:
    ds = workitem()
    ds["00741000"] = {"vr": "CS", "Value": ["ЗАПЛАНИРОВАНО"]}
    r = client.post("/workitems", content=orjson.dumps(ds))
    assert r.status_code == 400
    assert r.headers["warning"].isascii() and "\\u0417" in r.headers["warning"]
    assert "ЗАПЛАНИРОВАНО" in r.text
    q = client.get("/workitems", params={"ScheduledProcedureStepStartDateTime": "Ā"})
    assert q.status_code == 400 and q.headers["warning"].isascii()


def test_search_serves_workitems_stored_without_a_projection(redis_proc: RedisProcess) -> None:
    """A store written by an older aiw (no ``proj`` field) still answers searches whole."""
    srv = start_server(redis_proc.url)
    try:
        with httpx.Client(base_url=srv.url, headers={"content-type": "application/dicom+json"}) as c:
            uid = c.post("/workitems", content=orjson.dumps(workitem(patient_id="OLD-1"))).headers["location"].rsplit("/", 1)[1]
            fresh = c.get("/workitems", params={"PatientID": "OLD-1"}).json()
            redis_proc.client().hdel(f"{srv.env['AIW_KEY_PREFIX']}wi:{uid}", "proj")
            assert c.get("/workitems", params={"PatientID": "OLD-1"}).json() == fresh
    finally:
        srv.stop()


def test_a_huge_refused_value_gets_a_short_warning_and_the_whole_story_in_the_body(client: httpx.Client) -> None:
    ds = workitem()
    ds["00741200"] = {"vr": "CS", "Value": ["X" * 200_000]}
    r = client.post("/workitems", content=orjson.dumps(ds))
    assert r.status_code == 400
    assert all(len(w) <= 1100 for w in r.headers.get_list("warning"))
    assert "(0074,1200)" in r.headers["warning"] and "200000 characters" in r.text
