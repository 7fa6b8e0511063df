"""Random requests to every UPS-RS route: the server never answers 5xx, every 4xx carries a
``Warning: 299 <service>: ...`` header, and no refused request changes a stored workitem.

Bodies: random bytes, random JSON, DICOM-JSON-shaped datasets with wrong VRs and values,
huge values, deep nesting, arrays of several objects. Query strings: random keys,
keywords, tags, dotted paths, percent-encoding, ranges, wildcards, limit/offset junk.
Paths: existing workitems (SCHEDULED, IN PROGRESS, COMPLETED), unknown and malformed UIDs.
Content-Type: right, wrong and random. Bounded: a few hundred requests per store.
"""

from __future__ import annotations

import json
import string
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factory import performed, progress, state, workitem
from upsrs import vr
from upsrs.tables import ups_attributes

ROUTES = [
    ("POST", "/workitems"),
    ("GET", "/workitems"),
    ("GET", "/workitems/{uid}"),
    ("POST", "/workitems/{uid}"),
    ("PUT", "/workitems/{uid}/state"),
    ("POST", "/workitems/{uid}/cancelrequest"),
]
BODY_ROUTES = [r for r in ROUTES if r[0] != "GET"]
UID_ROUTES = [r for r in ROUTES if "{uid}" in r[1]]


class Pool:
    """Workitems in each state whose stored form is watched across refused requests."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.tuid: dict[str, str] = {}
        self.baseline: dict[str, bytes] = {}
        self.refill()

    def _make(self, target: str) -> str:
        c = self.client
        r = c.post("/workitems", content=json.dumps(workitem(worklist=f"FUZZ-{uuid.uuid4().hex[:8]}")))
        assert r.status_code == 201, r.text
        uid = r.headers["location"].rsplit("/", 1)[1]
        tuid = f"2.25.{uuid.uuid4().int}"
        if target != "SCHEDULED":
            assert c.put(f"/workitems/{uid}/state", content=json.dumps(state("IN PROGRESS", tuid))).status_code == 200
        if target == "COMPLETED":
            assert c.post(f"/workitems/{uid}?transaction-uid={tuid}", content=json.dumps(performed())).status_code == 200
            assert c.put(f"/workitems/{uid}/state", content=json.dumps(state("COMPLETED", tuid))).status_code == 200
        self.tuid[uid] = tuid
        return uid

    def refill(self) -> None:
        self.tuid.clear()
        for target in ("SCHEDULED", "IN PROGRESS", "COMPLETED"):
            self._make(target)
        self.baseline = self.snapshot()

    def snapshot(self) -> dict[str, bytes]:
        out = {}
        for uid in self.tuid:
            r = self.client.get(f"/workitems/{uid}")
            assert r.status_code == 200, (uid, r.status_code, r.text)
            out[uid] = r.content
        return out

    @property
    def uids(self) -> list[str]:
        return list(self.tuid)


@pytest.fixture
def pool(client: httpx.Client) -> Iterator[Pool]:
    yield Pool(client)


def send(client: httpx.Client, method: str, url: str, body: bytes | None, ctype: str | None) -> httpx.Response:
    headers = {} if ctype is None else {"content-type": ctype}
    if ctype is None:
        headers["content-type"] = ""  # no Content-Type at all (the client default is removed below)
    req = client.build_request(method, url, content=body, headers=headers)
    if ctype is None:
        del req.headers["content-type"]
    for attempt in range(2):
        try:
            return client.send(req)
        except (httpx.RemoteProtocolError, httpx.ReadError):  # a connection closed after a 500
            if attempt:
                raise
    raise AssertionError("unreachable")


def judge(pool: Pool, method: str, url: str, body: bytes | None, ctype: str | None) -> httpx.Response:
    """Send one request and check what a user sees."""
    what = f"{method} {url[:200]} body={body[:200] if body else body!r} ctype={ctype!r}"
    try:
        resp = send(pool.client, method, url, body, ctype)
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise AssertionError(f"{what}: the server closed the connection without a response ({exc})") from None
    what += f" -> {resp.status_code}"
    assert resp.status_code < 500, f"{what}: {resp.text[:500]}"
    warnings = resp.headers.get_list("warning")
    if 400 <= resp.status_code < 500:
        assert warnings, f"{what}: a refusal without a Warning header"
        assert all(w.startswith("299 ") for w in warnings), (what, warnings)
        after = pool.snapshot()
        changed = [u for u in after if after[u] != pool.baseline[u]]
        assert not changed, f"{what}: a refused request changed {changed}"
    elif method != "GET":
        # accepted: the workitems may have moved on; start again from a fresh set
        pool.refill()
    return resp


# ------------------------------------------------------------------ strategies
TABLE_TAGS: list[str] = []


def _collect(rules: dict) -> None:  # type: ignore[type-arg]
    for tag, rule in rules.items():
        TABLE_TAGS.append(f"{tag:08X}")
        _collect(rule.children)


_collect(ups_attributes())
TAGS = st.sampled_from(sorted(set(TABLE_TAGS)) + ["00091010", "7FE00010", "00000000", "0010002a", "FFFEE000",
                                                  "00020010", "00100000", "xyz", "", "001000200"])
VRS = st.sampled_from(sorted(vr.ALL_VRS) + ["XX", "", "sq", None, 5])
LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
          | st.text(max_size=30) | st.sampled_from(["", "SCHEDULED", "IN PROGRESS", "1.2.3", "20240101", "*", "\\"]))
JSON = st.recursive(LEAVES, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=25)


def _element(values: st.SearchStrategy) -> st.SearchStrategy:  # type: ignore[type-arg]
    return st.fixed_dictionaries({"vr": VRS}, optional={
        "Value": st.lists(values, max_size=3) | JSON,
        "InlineBinary": st.text(max_size=12),
        "BulkDataURI": LEAVES,
    })


PN = st.dictionaries(st.sampled_from(["Alphabetic", "Ideographic", "Phonetic", "Other"]), LEAVES, max_size=3)
DATASETS = st.recursive(
    st.dictionaries(TAGS, _element(LEAVES | PN), max_size=6),
    lambda items: st.dictionaries(TAGS, _element(LEAVES | PN | items), max_size=6),
    max_leaves=30,
)


@st.composite
def corrupted_workitems(draw: st.DrawFn) -> Any:
    """A real workitem (or update) with one or two things broken."""
    base = draw(st.sampled_from(["create", "progress", "performed", "state"]))
    ds: dict[str, Any] = {"create": workitem, "progress": lambda: progress(50, "fuzz"), "performed": performed,
                          "state": lambda: state("IN PROGRESS", "2.25.5")}[base]()
    kind = draw(st.sampled_from(["vr", "value", "drop", "huge", "deep", "extra", "state", "tuid"]))
    key = draw(st.sampled_from(sorted(ds)))
    if kind == "vr":
        ds[key] = {**ds[key], "vr": draw(VRS)}
    elif kind == "value":
        ds[key] = {**ds[key], "Value": draw(st.lists(LEAVES | PN, min_size=1, max_size=2))}
    elif kind == "drop":
        del ds[key]
    elif kind == "huge":
        ds[key] = {**ds[key], "Value": ["X" * draw(st.sampled_from([65, 1025, 10241, 70000, 300000]))]}
    elif kind == "deep":
        inner: dict[str, Any] = {"00091010": {"vr": "LO", "Value": ["x"]}}
        for _ in range(draw(st.integers(20, 300))):
            inner = {draw(st.sampled_from(["00091010", "00404018", "0040A370"])): {"vr": "SQ", "Value": [inner]}}
        ds.update(inner)
    elif kind == "extra":
        ds[draw(TAGS)] = draw(_element(LEAVES | PN))
    elif kind == "state":
        ds["00741000"] = {"vr": "CS", "Value": [draw(st.sampled_from(["IN PROGRESS", "COMPLETED", "x", "", 5]))]}
    elif kind == "tuid":
        ds["00081195"] = {"vr": "UI", "Value": [draw(LEAVES)]}
    return ds


def _dump(doc: Any) -> bytes:
    return json.dumps(doc).encode()


BODIES = st.one_of(
    st.binary(max_size=300),
    JSON.map(_dump),
    DATASETS.map(_dump),
    st.lists(DATASETS, min_size=2, max_size=3).map(_dump),  # arrays of several objects
    corrupted_workitems().map(_dump),
    st.lists(corrupted_workitems(), min_size=0, max_size=2).map(_dump),
    st.sampled_from([b"", b" ", b"[]", b"[[]]", b"{}", b"null", b"[{}]", b"\xef\xbb\xbf{}", b"{" * 2000,
                     b"[" * 100000, b'{"00741000":{"vr":"CS","Value":["SCHEDULED"]}}' * 2]),
)
CTYPES = st.one_of(
    st.sampled_from([None, "application/dicom+json", "application/json", "application/dicom+json; charset=utf-8",
                     "text/plain", "application/dicom+xml", 'multipart/related; type="application/dicom+xml"',
                     "application/octet-stream", "", ";", "application/dicom+json;;;", "*/*"]),
    st.text(string.printable.strip("\r\n\x0b\x0c"), max_size=40).map(str.strip),  # h11 sends no other
)
UID_TEXT = st.one_of(
    st.sampled_from(["1.2.3.999", "2.25.1", "0", "1.02", "1.2.840.10008.5.1.4.34.5", "%FF", "%00", "%C3%A9",
                     "a" * 300, "1." * 40 + "1", "%20", "%5C", "1.2.3%3Fx"]),
    # a "/" would leave the route (see test_paths_beside_the_routes), "." and ".." are
    # resolved by the client before sending
    st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and s.strip(".") != "").map(
        lambda s: quote(s, safe="")),
)

KEYWORDS = ["PatientID", "PatientName", "ProcedureStepState", "ScheduledProcedureStepStartDateTime",
            "ScheduledWorkitemCodeSequence", "CodeValue", "SOPInstanceUID", "TransactionUID", "InputReadinessState",
            "WorklistLabel", "ReferencedRequestSequence", "AccessionNumber", "PregnancyStatus", "PatientBirthDate",
            "Modality", "NoSuchKeyword", "patientid"]
RESERVED = ["includefield", "limit", "offset", "fuzzymatching", "emptyvaluematching", "multiplevaluematching",
            "accept", "charset", "workitem", "AffectedSOPInstanceUID", "transaction-uid", "transaction", "requester"]
KEY_PART = st.one_of(st.sampled_from(KEYWORDS), TAGS, st.text(string.ascii_letters + string.digits, max_size=10))
QUERY_KEY = st.one_of(
    st.lists(KEY_PART, min_size=1, max_size=3).map(".".join),
    st.sampled_from(RESERVED),
    st.sampled_from(["", ".", "..", "%FF", "%00", "a%3Db", "+", "%2E"]),
)
QUERY_VALUE = st.one_of(
    st.sampled_from(["", "*", "?", "**", "-", "--", "20240101-", "-20240101", "20240101-20240102", "2024-2025",
                     "99991231-", "-00010101", "00000000", "all", "true", "false", "maybe", "-1", "1.5",
                     "9" * 40, "0", "%FF", "%00", "%C3%A9", "IN+PROGRESS", "IN%20PROGRESS", "1.2.3,1.2.4", ",,",
                     '""', "DOE^*", "\\", "%5C", "SCHEDULED", "1e999", "NaN", "20240101120000.5-0500-"]),
    st.text(string.printable.strip("#\r\n\x0b\x0c"), max_size=30).map(lambda s: quote(s, safe="*?-.,^")),
)
QUERY = st.lists(st.tuples(QUERY_KEY, QUERY_VALUE, st.booleans()), max_size=5).map(
    lambda kvs: "&".join(k if bare else f"{k}={v}" for k, v, bare in kvs))


def _url(pool: Pool, template: str, uid_choice: Any, query: str) -> str:
    uid = pool.uids[uid_choice] if isinstance(uid_choice, int) else uid_choice
    path = template.replace("{uid}", uid)
    return f"{path}?{query}" if query else path


FUZZ = settings(deadline=None, max_examples=40,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])
UID_CHOICE = st.one_of(st.integers(0, 2), UID_TEXT)


# ------------------------------------------------------------------ properties
@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), uid=UID_CHOICE, body=BODIES, ctype=CTYPES)
def test_random_bodies(pool: Pool, route: tuple[str, str], uid: Any, body: bytes, ctype: str | None) -> None:
    judge(pool, route[0], _url(pool, route[1], uid, ""), body, ctype)


@FUZZ
@given(query=QUERY)
def test_random_search_queries(pool: Pool, query: str) -> None:
    resp = judge(pool, "GET", f"/workitems?{query}", None, None)
    if resp.status_code == 200:
        assert isinstance(resp.json(), list) and resp.json()
        assert all("00081195" not in r for r in resp.json())


@FUZZ
@given(route=st.sampled_from(ROUTES), uid=UID_CHOICE, query=QUERY, body=st.none() | BODIES, ctype=CTYPES)
def test_random_requests_everywhere(pool: Pool, route: tuple[str, str], uid: Any, query: str,
                                    body: bytes | None, ctype: str | None) -> None:
    judge(pool, route[0], _url(pool, route[1], uid, query), body, ctype)


@FUZZ
@given(route=st.sampled_from(UID_ROUTES[1:]), uid=st.integers(0, 2), doc=corrupted_workitems() | DATASETS,
       with_tuid=st.booleans())
def test_claimed_workitem_survives_broken_updates(pool: Pool, route: tuple[str, str], uid: int, doc: Any,
                                                  with_tuid: bool) -> None:
    """Requests that carry the right Transaction UID get past the lock; their broken
    datasets must still change nothing."""
    target = pool.uids[uid]
    query = f"transaction-uid={pool.tuid[target]}" if with_tuid else ""
    judge(pool, route[0], _url(pool, route[1], uid, query), _dump(doc), "application/dicom+json")


# ------------------------------------------------------------------ found by the fuzzer, kept as cases
CASES = [
    ("GET", "/workitems/%FF", None),
    ("GET", "/workitems/%E2%82%AC", None),
    ("GET", "/workitems?includefield=%FF", None),
    ("GET", "/workitems?%FF=1", None),
    ("GET", "/workitems?PatientName=%E2%82%AC%5C", None),
    ("GET", "/workitems?offset=99999999999999999999999", None),
    ("GET", "/workitems?limit=99999999999999999999999", None),
    ("GET", "/workitems?ScheduledProcedureStepStartDateTime=99991231-", None),
    ("GET", "/workitems?ScheduledProcedureStepStartDateTime=9999", None),
    ("POST", "/workitems", b'{"00741000": 5}'),
    ("POST", "/workitems", b'{"00081195": 7}'),
    ("POST", "/workitems", b'{"00080018": {"vr": "UI", "Value": [{"a": 1}]}}'),
    ("POST", "/workitems/{0}", b'{"00081195": 7}'),
    ("PUT", "/workitems/{1}/state", b'{"00741000": 5, "00081195": 7}'),
    ("POST", "/workitems/{0}/cancelrequest", b'{"00741238": 7}'),
    ("POST", "/workitems/{0}/cancelrequest?requester=%E2%82%AC", None),
    ("POST", "/workitems", b"[" * 5000),
    # control characters in a UID of the path: the Warning naming the UID must still be a valid header
    ("GET", "/workitems/%08", None),
    ("GET", "/workitems/1.2%7F", None),
    ("POST", "/workitems/%00/cancelrequest", None),
    ("PUT", "/workitems/%0D%0A/state", b'{"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}'),
]


@pytest.mark.parametrize("method,url,body", CASES, ids=[f"{m} {u}" for m, u, _ in CASES])
def test_known_bad_requests(pool: Pool, method: str, url: str, body: bytes | None) -> None:
    url = url.format(*pool.uids)
    resp = judge(pool, method, url, body, "application/dicom+json" if body else None)
    assert resp.status_code < 500


def test_deeply_nested_private_sequence_is_refused_not_a_500(pool: Pool) -> None:
    ds = workitem()
    inner: dict[str, Any] = {"00091010": {"vr": "LO", "Value": ["x"]}}
    for _ in range(240):
        inner = {"00091010": {"vr": "SQ", "Value": [inner]}}
    ds.update(inner)
    resp = judge(pool, "POST", "/workitems", _dump(ds), "application/dicom+json")
    assert resp.status_code == 400


@pytest.mark.parametrize("value", ["99991231235959.999999-1200", "99991231", "9999"])
def test_start_datetime_at_the_end_of_the_calendar(pool: Pool, value: str) -> None:
    ds = workitem()
    ds["00404005"] = {"vr": "DT", "Value": [value]}
    resp = judge(pool, "POST", "/workitems", _dump(ds), "application/dicom+json")
    assert resp.status_code == 201
    found = pool.client.get("/workitems", params={"ScheduledProcedureStepStartDateTime": "9999-",
                                                  "SOPInstanceUID": resp.headers["location"].rsplit("/", 1)[1]})
    assert found.status_code == 200 and len(found.json()) == 1


def test_body_over_the_limit_is_413_with_a_warning(pool: Pool) -> None:
    resp = judge(pool, "POST", "/workitems", b"[" + b" " * (5 * 1024 * 1024) + b"]", "application/dicom+json")
    assert resp.status_code == 413


def test_array_of_several_workitems_is_refused(pool: Pool) -> None:
    resp = judge(pool, "POST", "/workitems", _dump([workitem(), workitem()]), "application/dicom+json")
    assert resp.status_code == 400


BESIDE_ROUTES = [("GET", "/workitems/1.2.3/foo"), ("GET", "/workitems/a%2Fb"), ("DELETE", "/workitems/{0}"),
                 ("GET", "/workitems/{0}/state"), ("PATCH", "/workitems"), ("GET", "/workitems/{0}/cancelrequest")]


@pytest.mark.parametrize("method,url", BESIDE_ROUTES, ids=[f"{m} {u}" for m, u in BESIDE_ROUTES])
def test_paths_beside_the_routes(pool: Pool, method: str, url: str) -> None:
    """A user who gets the path or the method slightly wrong (a UID holding an encoded '/',
    a method the resource does not have) sees a 404/405 that says why, like every other
    refusal of the service."""
    resp = judge(pool, method, url.format(*pool.uids), None, None)
    assert resp.status_code in (404, 405)
