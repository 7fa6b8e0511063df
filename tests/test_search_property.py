"""Search through HTTP on a real redis-server equals brute force over the created workitems.

Hypothesis builds small worklists (states, priorities, codes, patients, start times,
labels) and queries; the server's answer, page by page (following the paging Warning and
``offset``), must be exactly ``upsrs.matching.parse_query(...).matches`` applied to each
created workitem as Retrieve returns it, in creation order, each result projected as
``upsrs.matching.project`` says, with the right "additional results" counts, and 204 when
nothing matches. Every example lives under its own Worklist Label.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.factory import performed, state, workitem
from upsrs.matching import parse_query, project

PAGING = re.compile(r"^299 \S+: There are (\d+) additional results that can be requested$")

CODES = ["ALG-A", "ALG-B", "ALG-C"]
STATIONS = ["NODE-1", "NODE-2"]
PATIENTS = ["P1", "P2", "P3", "PX-10"]
LABELS = ["Lung CAD", "Lung nodule", "Brain MS", "Liver"]
STARTS = ["20261122080000", "20261122100000", "20261122100000+0100", "20261123093000", "20261201120000",
          "20261122235959-0500"]
STATES = ["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"]


@st.composite
def workitem_specs(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "state": draw(st.sampled_from(STATES)),
        "priority": draw(st.sampled_from(["HIGH", "MEDIUM", "LOW"])),
        "readiness": draw(st.sampled_from(["READY", "INCOMPLETE", "UNAVAILABLE"])),
        "codes": draw(st.lists(st.tuples(st.sampled_from(CODES), st.sampled_from(["99AIW", "DCM"])),
                               min_size=1, max_size=2)),
        "station": draw(st.none() | st.sampled_from(STATIONS)),
        "patient": draw(st.sampled_from(PATIENTS)),
        "start": draw(st.sampled_from(STARTS)),
        "label": draw(st.sampled_from(LABELS)),
        "accession": draw(st.sampled_from(["ACC-1", "ACC-2"])),
    }


def _uid(resp: httpx.Response) -> str:
    return resp.headers["location"].rsplit("/", 1)[1]


def _send(client: httpx.Client, method: str, url: str, ds: Any = None) -> httpx.Response:
    return client.request(method, url, content=orjson.dumps(ds) if ds is not None else None)


def create(client: httpx.Client, scope: str, spec: dict[str, Any]) -> str:
    ds = workitem(worklist=scope, priority=spec["priority"], readiness=spec["readiness"], patient_id=spec["patient"],
                  start=spec["start"], label=spec["label"], accession=spec["accession"],
                  workitem_code=(spec["codes"][0][0], spec["codes"][0][1], "algorithm"),
                  station=(spec["station"], "99AIW", "station") if spec["station"] else None)
    for value, scheme in spec["codes"][1:]:
        ds["00404018"]["Value"].append({"00080100": {"vr": "SH", "Value": [value]},
                                        "00080102": {"vr": "SH", "Value": [scheme]},
                                        "00080104": {"vr": "LO", "Value": ["second algorithm"]}})
    r = _send(client, "POST", "/workitems", ds)
    assert r.status_code == 201, r.text
    uid = _uid(r)
    tuid = f"2.25.{uuid.uuid4().int}"
    target = spec["state"]
    if target == "CANCELED" and spec["priority"] == "LOW":  # the performer's way: claim, then cancel
        assert _send(client, "PUT", f"/workitems/{uid}/state", state("IN PROGRESS", tuid)).status_code == 200
        r = _send(client, "PUT", f"/workitems/{uid}/state", state("CANCELED", tuid))
        assert r.status_code == 200, r.text
    elif target == "CANCELED":  # the requester's way
        assert client.post(f"/workitems/{uid}/cancelrequest").status_code == 202
    elif target in ("IN PROGRESS", "COMPLETED"):
        assert _send(client, "PUT", f"/workitems/{uid}/state", state("IN PROGRESS", tuid)).status_code == 200
        if target == "COMPLETED":
            r = _send(client, "POST", f"/workitems/{uid}?transaction-uid={tuid}", performed())
            assert r.status_code == 200, r.text
            r = _send(client, "PUT", f"/workitems/{uid}/state", state("COMPLETED", tuid))
            assert r.status_code == 200, r.text
    return uid


@st.composite
def queries(draw: st.DrawFn, uids: list[str]) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    pool = draw(st.lists(st.sampled_from(
        ["state", "priority", "readiness", "code", "code+scheme", "station", "patient", "start", "label",
         "accession", "uids", "includefield", "request"]), unique=True, max_size=3))
    if "code" in pool and "code+scheme" in pool:  # one key may appear once (a duplicate is a 400)
        pool.remove("code")
    for k in pool:
        if k == "state":
            keys.append(("ProcedureStepState", draw(st.sampled_from(STATES + ["IN*", "*ED", "SCHEDULED"]))))
        elif k == "priority":
            keys.append(("00741200", draw(st.sampled_from(["HIGH", "MEDIUM", "LOW"]))))
        elif k == "readiness":
            keys.append(("InputReadinessState", draw(st.sampled_from(["READY", "INCOMPLETE", "UNAVAILABLE"]))))
        elif k == "code":
            keys.append(("ScheduledWorkitemCodeSequence.CodeValue", draw(st.sampled_from(CODES + ["ALG-*"]))))
        elif k == "code+scheme":
            keys.append(("ScheduledWorkitemCodeSequence.CodeValue", draw(st.sampled_from(CODES))))
            keys.append(("00404018.00080102", draw(st.sampled_from(["99AIW", "DCM"]))))
        elif k == "station":
            keys.append(("ScheduledStationNameCodeSequence.CodeValue", draw(st.sampled_from(STATIONS))))
        elif k == "patient":
            keys.append(("PatientID", draw(st.sampled_from(PATIENTS + ["P?", "P*", "PX-1", "P1 "]))))
        elif k == "start":
            keys.append(("ScheduledProcedureStepStartDateTime", draw(st.sampled_from([
                "20261122", "202611", "20261122100000", "20261122090000+0000", "20261122-20261123",
                "20261122090000-20261122100000", "-20261122100000", "20261123-", "20261122100000+0100-",
                "-20261122235959-0500", "2026", "20261122043000-0500-20261122050000-0500"]))))
        elif k == "label":
            keys.append(("ProcedureStepLabel", draw(st.sampled_from(LABELS + ["Lung*", "*i*", "L?ver", "Liver "]))))
        elif k == "request":  # not indexed: always decided by the matching engine
            keys.append(("ReferencedRequestSequence.RequestedProcedureID", draw(st.sampled_from(
                ["RP-ACC-1", "RP-ACC-2 ", "RP-*"]))))
        elif k == "accession":
            keys.append(("ReferencedRequestSequence.AccessionNumber", draw(st.sampled_from(["ACC-1", "ACC-2"]))))
        elif k == "uids" and uids:
            chosen = draw(st.lists(st.sampled_from(uids), min_size=1, max_size=3))
            keys.append(("SOPInstanceUID", ",".join(chosen + draw(st.sampled_from([[], ["2.25.1"]])))))
        elif k == "includefield":
            keys.append(("includefield", draw(st.sampled_from(["all", "ExpectedCompletionDateTime",
                                                                "00404010,ScheduledProcedureStepExpirationDateTime"]))))
    return keys


def _warnings(resp: httpx.Response) -> list[str]:
    return resp.headers.get_list("warning")


def search_all(client: httpx.Client, params: list[tuple[str, str]], limit: int | None) -> list[dict[str, Any]]:
    """Every page of a search; checks the paging Warning of each page against what follows."""
    pages: list[list[dict[str, Any]]] = []
    remaining_said: list[int] = []
    offset = 0
    while True:
        page_params = params + [("offset", str(offset))] + ([("limit", str(limit))] if limit else [])
        r = client.get("/workitems", params=page_params)
        if r.status_code == 204:
            assert r.content == b"" and not [w for w in _warnings(r) if PAGING.match(w)]
            assert offset == 0, "a later page is only asked for when the Warning announced it"
            return []
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/dicom+json")
        page = r.json()
        assert isinstance(page, list) and page, "200 carries results"
        if limit:
            assert len(page) <= limit
        pages.append(page)
        paging = [int(m.group(1)) for w in _warnings(r) if (m := PAGING.match(w))]
        assert len(paging) <= 1
        if not paging:
            break
        assert paging[0] > 0
        remaining_said.append(paging[0])
        offset += len(page)
        assert len(pages) < 50
    results = [r for p in pages for r in p]
    # each announced count is exactly what the later pages delivered
    delivered_after = [sum(len(p) for p in pages[i + 1:]) for i in range(len(pages) - 1)]
    assert remaining_said == delivered_after
    return results


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_search_equals_brute_force(redis_client: httpx.Client, data: st.DataObject) -> None:
    scope = f"SP-{uuid.uuid4().hex[:12]}"
    specs = data.draw(st.lists(workitem_specs(), max_size=7), label="workitems")
    uids = [create(redis_client, scope, spec) for spec in specs]
    stored = []
    for uid in uids:
        r = redis_client.get(f"/workitems/{uid}")
        assert r.status_code == 200
        doc = r.json()
        stored.append(doc[0] if isinstance(doc, list) else doc)
    for _ in range(3):
        keys = data.draw(queries(uids), label="query")
        limit = data.draw(st.none() | st.integers(1, 4), label="limit")
        params = [("WorklistLabel", scope), *keys]
        query = parse_query(params)
        expected = [project(doc, query) for doc in stored if query.matches(doc)]
        got = search_all(redis_client, params, limit)
        event("no match (204)" if not expected else
              "several pages" if limit and len(expected) > limit else "one page")
        assert [r["00080018"]["Value"][0] for r in got] == [e["00080018"]["Value"][0] for e in expected], params
        assert got == expected
        assert all("00081195" not in r for r in got)


def test_search_scope_sees_nothing_of_other_examples(redis_client: httpx.Client) -> None:
    r = redis_client.get("/workitems", params={"WorklistLabel": f"SP-{uuid.uuid4().hex[:12]}"})
    assert r.status_code == 204 and r.content == b""


def test_search_paging_by_hand(redis_client: httpx.Client) -> None:
    """Five matches, pages of two: 2 (3 more), 2 (1 more), 1; then offset past the end is 204."""
    scope = f"SP-{uuid.uuid4().hex[:12]}"
    uids = [create(redis_client, scope, {"state": "SCHEDULED", "priority": "MEDIUM", "readiness": "READY",
                                         "codes": [("ALG-A", "99AIW")], "station": None, "patient": "P1",
                                         "start": STARTS[0], "label": "Lung CAD", "accession": "ACC-1"})
            for _ in range(5)]
    seen, said = [], []
    for offset in (0, 2, 4):
        r = redis_client.get("/workitems", params={"WorklistLabel": scope, "limit": "2", "offset": str(offset)})
        assert r.status_code == 200
        seen += [x["00080018"]["Value"][0] for x in r.json()]
        said.append([w for w in _warnings(r) if PAGING.match(w)])
    assert seen == uids
    assert [len(s) for s in said] == [1, 1, 0]
    assert PAGING.match(said[0][0]).group(1) == "3" and PAGING.match(said[1][0]).group(1) == "1"  # type: ignore[union-attr]
    r = redis_client.get("/workitems", params={"WorklistLabel": scope, "offset": "5"})
    assert r.status_code == 204 and not _warnings(r)
