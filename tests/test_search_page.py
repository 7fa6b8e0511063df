"""A search page whose stored values become the reply body as they are (``WorkitemStore.page_array``), and parsed
queries kept by their query string (``ups_server.querycache``).

What a user sees must not change: the body is exactly the results in creation order, each
the stored default projection (or the whole workitem for ``includefield=all``), with the
paging Warning and 204 as before, also on a store where some workitems were written before
projections were kept.
"""

from __future__ import annotations

from datetime import timezone
from typing import Iterable

import httpx
import orjson
import pytest

from tests.factory import state, workitem
from tests.servers import start_redis, start_server
from upsrs import dicomjson as dj
from upsrs.errors import QueryError
from upsrs.matching import parse_query, project
from upsrs.uids import new_uid
from ups_server.querycache import QueryCache


def _expected(docs: list[bytes], query: list[tuple[str, str]]) -> bytes:
    parsed = parse_query(query)
    if parsed.include_all:
        return b"[" + b",".join(docs) + b"]"
    return b"[" + b",".join(dj.dumps(project(orjson.loads(d), parsed)) for d in docs) + b"]"


@pytest.mark.parametrize("sort_ro", [True, False], ids=["redis-7", "without-SORT_RO"])
def test_search_pages_are_the_stored_results_joined_in_creation_order(sort_ro: bool) -> None:
    """Pages one sorted set answers are read by SORT_RO (``WorkitemStore.page_array``);
    on a Redis without it, and for the other searches, by the search script: the same
    bodies and Warnings either way, legacy workitems (no stored projection) included."""
    redis_proc = start_redis() if sort_ro else start_redis("--rename-command", "SORT_RO", "")
    srv = start_server(redis_proc.url)
    try:
        with httpx.Client(base_url=srv.url, headers={"content-type": "application/dicom+json"}) as c:
            uids = [c.post("/workitems", content=orjson.dumps(workitem(patient_id="PAGE-1"))).headers["location"]
                    .rsplit("/", 1)[1] for _ in range(7)]
            other = c.post("/workitems", content=orjson.dumps(workitem(patient_id="OTHER"))).headers["location"]
            claimed = uids[3]  # leaves the SCHEDULED index
            assert c.put(f"/workitems/{claimed}/state", content=orjson.dumps(state("IN PROGRESS", new_uid()))).status_code == 200
            every = [c.get(f"/workitems/{u}").content[1:-1] for u in uids]
            scheduled = every[:3] + every[4:]
            stored = every + [c.get(other).content[1:-1]]
            code = orjson.loads(every[0])[dj.key(0x00404018)]["Value"][0][dj.key(0x00080100)]["Value"][0]
            for legacy in (uids[1], uids[4]):  # written by an aiw that kept no projection
                redis_proc.client().hdel(f"{srv.env['AIW_KEY_PREFIX']}wi:{legacy}", "proj")
            stats = redis_proc.client().info("commandstats")
            for docs, matching in ((every, [("PatientID", "PAGE-1")]),  # one index
                                   (stored, []),  # none: every workitem
                                   (scheduled + stored[-1:], [("ProcedureStepState", "SCHEDULED"),  # one composite index
                                                ("ScheduledWorkitemCodeSequence.CodeValue", code)]),
                                   (scheduled, [("PatientID", "PAGE-1"), ("ProcedureStepState", "SCHEDULED"),
                                                ("ScheduledWorkitemCodeSequence.CodeValue", code)]),  # two indexes
                                   (scheduled, [("ProcedureStepState", "SCHEDULED"), ("PatientID", "PAGE-*"),
                                                ("ScheduledWorkitemCodeSequence.CodeValue", code)])):  # + residual
                for extra in ([], [("includefield", "all")]):
                    for offset, limit in ((0, 10), (0, 3), (2, 3), (3, 2), (5, 1), (6, 1), (7, 3), (20, 1)):
                        query = [*matching, ("offset", str(offset)), ("limit", str(limit)), *extra]
                        r = c.get("/workitems", params=query)
                        page = docs[offset:offset + limit]
                        if not page:
                            assert r.status_code == 204 and r.content == b""
                            continue
                        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
                        assert r.content == _expected(page, query), (matching, offset, limit, extra)
                        remaining = len(docs) - offset - len(page)
                        warnings = r.headers.get_list("warning")
                        assert (remaining > 0) == any(str(remaining) in w for w in warnings), warnings
            # the first page of one index: all its workitems have their projection
            assert c.get("/workitems", params={"ProcedureStepState": "SCHEDULED", "limit": "1"}).status_code == 200
            used = redis_proc.client().info("commandstats").get("cmdstat_sort_ro", {}).get("calls", 0) \
                - stats.get("cmdstat_sort_ro", {}).get("calls", 0)
            assert (used > 0) == sort_ro
    finally:
        srv.stop()
        redis_proc.stop()


def _counting(pairs: list[tuple[str, str]], calls: list[int]):  # type: ignore[no-untyped-def]
    def params() -> Iterable[tuple[str, str]]:
        calls.append(1)
        return pairs
    return params


def test_a_query_string_is_parsed_once_and_answers_as_parsed() -> None:
    cache = QueryCache(timezone.utc)
    calls: list[int] = []
    pairs = [("ProcedureStepState", "SCHEDULED"), ("limit", "50"), ("includefield", "PatientName")]
    first = cache.get(b"q1", _counting(pairs, calls))
    again = cache.get(b"q1", _counting(pairs, calls))
    assert again is first and len(calls) == 1
    assert first == parse_query(pairs)


def test_a_refused_query_is_refused_every_time_with_the_same_words() -> None:
    cache = QueryCache(timezone.utc)
    calls: list[int] = []
    words = []
    for _ in range(2):
        with pytest.raises(QueryError) as exc:
            cache.get(b"bad", _counting([("NoSuchAttribute", "x")], calls))
        words.append(str(exc.value))
    assert len(calls) == 2 and words[0] == words[1]


def test_the_cache_stays_bounded() -> None:
    cache = QueryCache(timezone.utc, size=8)
    for i in range(100):
        cache.get(f"q{i}".encode(), lambda: [("PatientID", "X")])
        assert len(cache._parsed) <= 8
