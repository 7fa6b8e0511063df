"""performers.dicomweb against the built-in store and a real Orthanc: STOW, then WADO-RS
retrieval of the series to files; failures reported by SOP Instance UID and Failure
Reason; retries on 503, none on 404, timeouts, a transfer that breaks mid-body.

The fault injection is an ASGI wrapper around the built-in store, served by uvicorn on
a free port, so the client meets the faults over real HTTP.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pydicom
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from performers.dicomweb import (RetrievalError, StoreError, StoredInstance, fetch_series, parse_retrieve_url,
                                 retrieve_series, retrieve_study, store_instances)
from tests.orthanc import INSTALL_HINT, Orthanc, orthanc_available, start_orthanc
from ups_server.dicomweb.multipart import MultipartParser, PartData, PartEnd, PartStart, parse_media_type
from tests.test_dicomweb_store import DICOM_MULTIPART, mounted, mr_series, serve

FAST = dict(timeout=10.0, retries=2, backoff=0.05)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(mounted(tmp_path_factory.mktemp("builtin"))) as url:
        yield f"{url}/dicom-web"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if not orthanc_available():
        pytest.skip(f"Orthanc with the DICOMweb plugin is not installed ({INSTALL_HINT})")
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(params=["builtin", "orthanc"])
def service(request: pytest.FixtureRequest) -> str:
    """The DICOMweb service root of each origin server."""
    if request.param == "orthanc":
        return request.getfixturevalue("orthanc").dicomweb_url
    return request.getfixturevalue("builtin")


def _only_part(response: httpx.Response) -> bytes:
    """The body of the one part of a multipart/related response."""
    parser = MultipartParser(parse_media_type(response.headers["content-type"]).param("boundary") or "")
    events = parser.feed(response.content)
    parser.close()
    assert [type(e) for e in events if not isinstance(e, PartData)] == [PartStart, PartEnd]
    return b"".join(e.data for e in events if isinstance(e, PartData))


def test_store_then_retrieve_series_to_files(service: str, tmp_path: Path) -> None:
    series = mr_series(8, seed=1)
    st, se = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    stored = store_instances(f"{service}/studies", series, **FAST)
    assert [s.sop_instance_uid for s in stored] == [d.SOPInstanceUID for d in series]
    assert all(s.study_uid == st and s.series_uid == se and s.sop_class_uid == d.SOPClassUID
               for s, d in zip(stored, series))
    for s in stored[:2]:  # the server's Retrieve URL resolves, port and all
        assert s.retrieve_url == f"{service}/studies/{st}/series/{se}/instances/{s.sop_instance_uid}"
        r = httpx.get(s.retrieve_url, headers={"accept": DICOM_MULTIPART}, timeout=10)
        assert r.status_code == 200 and s.sop_instance_uid.encode() in r.content

    files = retrieve_series(f"{service}/studies/{st}/series/{se}", tmp_path / "in", **FAST)
    assert sorted(f.name for f in files) == sorted(f"{d.SOPInstanceUID}.dcm" for d in series)
    assert not list((tmp_path / "in").glob(".*"))  # no temporary files left
    sent = {d.SOPInstanceUID: d for d in series}
    for f in files:
        got = pydicom.dcmread(f)
        want = sent[got.SOPInstanceUID]
        assert got.PixelData == want.PixelData
        assert (got.StudyInstanceUID, got.SeriesInstanceUID, got.SOPClassUID) == (st, se, want.SOPClassUID)
        assert got.InstanceNumber == want.InstanceNumber

    for s in stored[:2]:  # each file is the instance as the server sends it, byte for byte
        r = httpx.get(s.retrieve_url, headers={"accept": DICOM_MULTIPART}, timeout=10)
        assert (tmp_path / "in" / f"{s.sop_instance_uid}.dcm").read_bytes() == _only_part(r)

    fetched = fetch_series(f"{service}/studies/{st}/series/{se}", tmp_path / "fetched", **FAST)
    assert [r.path.name for r in fetched] == [f.name for f in files]
    for r in fetched:  # the data set kept is the file's content, without a second copy of its bytes
        on_disk = pydicom.dcmread(r.path)
        assert r.dataset.SOPInstanceUID == on_disk.SOPInstanceUID and r.dataset.PixelData == on_disk.PixelData
        assert r.dataset == on_disk and getattr(r.dataset, "buffer", None) is None

    again = retrieve_study(f"{service}/studies/{st}", tmp_path / "study", **FAST)
    assert [f.name for f in again] == [f.name for f in files]


def test_store_url_forms(service: str) -> None:
    """A service base, its /studies, and /studies/{study} all work."""
    a, b, c = (mr_series(1, seed=i) for i in range(3))
    assert len(store_instances(service, a, **FAST)) == 1
    assert len(store_instances(f"{service}/studies/", b, **FAST)) == 1
    (done,) = store_instances(f"{service}/studies/{c[0].StudyInstanceUID}", c, **FAST)
    assert isinstance(done, StoredInstance) and done.sop_instance_uid == c[0].SOPInstanceUID
    assert store_instances(service, [], **FAST) == []


def test_store_study_mismatch_names_the_instance(service: str) -> None:
    mine, other = mr_series(1), mr_series(1)
    with pytest.raises(StoreError) as err:
        store_instances(f"{service}/studies/{mine[0].StudyInstanceUID}", other, **FAST)
    assert err.value.status == 409
    (failed,) = err.value.failed
    assert failed.sop_instance_uid == other[0].SOPInstanceUID
    assert failed.failure_reason in (0xC409, 0x0110)  # ours (as dcm4chee-arc); Orthanc 1.10's
    assert other[0].SOPInstanceUID in str(err.value) and "0x" in str(err.value)


def test_partial_store_lists_stored_and_failed(builtin: str) -> None:
    first = mr_series(1)
    store_instances(builtin, first, **FAST)
    moved = mr_series(1)
    moved[0].SOPInstanceUID = first[0].SOPInstanceUID  # the same instance UID in another series
    fresh = mr_series(1)
    with pytest.raises(StoreError) as err:
        store_instances(builtin, moved + fresh, **FAST)
    assert err.value.status == 202
    assert [(f.sop_instance_uid, f.failure_reason) for f in err.value.failed] == [(first[0].SOPInstanceUID, 0x0111)]
    assert [s.sop_instance_uid for s in err.value.stored] == [fresh[0].SOPInstanceUID]


def test_store_refuses_datasets_it_cannot_send(builtin: str) -> None:
    (ds,) = mr_series(1)
    del ds.SeriesInstanceUID
    with pytest.raises(ValueError, match="SeriesInstanceUID"):
        store_instances(builtin, [ds], **FAST)
    (ds,) = mr_series(1)
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(ValueError, match="TransferSyntaxUID"):
        store_instances(builtin, [ds], **FAST)


def test_parse_retrieve_url() -> None:
    assert parse_retrieve_url("http://pacs/dicom-web/studies/1.2/series/3.4") == ("http://pacs/dicom-web", "1.2", "3.4")
    assert parse_retrieve_url("https://h:8443/studies-x/wado/studies/1.2/") == ("https://h:8443/studies-x/wado", "1.2",
                                                                               None)
    assert parse_retrieve_url("http://h/studies/1.2") == ("http://h", "1.2", None)
    for bad in ("http://pacs/dicom-web/series/3.4", "ftp://pacs/studies/1.2", "http://pacs/studies/1.2/series",
                "http://pacs/studies/1.2/series/3.4/instances/5.6", "http://pacs/studies/1.2?x=1",
                "http://pacs/studies/../../etc"):
        with pytest.raises(ValueError):
            parse_retrieve_url(bad)


def test_retrieval_errors_name_url_and_status(builtin: str, tmp_path: Path) -> None:
    url = f"{builtin}/studies/1.2.3/series/4.5.6"
    with pytest.raises(RetrievalError) as err:
        retrieve_series(url, tmp_path, **FAST)
    assert err.value.status == 404 and err.value.url == url and "404" in str(err.value)
    with pytest.raises(RetrievalError, match="study URL"):
        retrieve_series(f"{builtin}/studies/1.2.3", tmp_path, **FAST)
    with pytest.raises(RetrievalError, match="not a valid UID"):
        retrieve_series(f"{builtin}/studies/1.2.3/series/x", tmp_path, **FAST)


# ---------------------------------------------------------------- faults

class Faults:
    """ASGI wrapper: counts requests; answers the next ``fail`` of them 503; waits
    ``delay`` seconds before answering; cuts the next ``cut`` responses off after
    ``cut_after`` body bytes (the connection drops mid-transfer)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.seen: list[str] = []
        self.fail = 0
        self.delay = 0.0
        self.cut = 0
        self.cut_after = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.seen.append(scope["method"])
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"busy"})
            return
        if self.cut:
            self.cut -= 1
            sent = 0

            async def cutting(message: Message) -> None:
                nonlocal sent
                if message["type"] == "http.response.body":
                    sent += len(message.get("body", b""))
                    if sent > self.cut_after:
                        raise ConnectionAbortedError("fault injection: connection cut mid-body")
                await send(message)

            return await self.app(scope, receive, cutting)
        await self.app(scope, receive, send)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[tuple[str, Faults, list[Any]]]:
    """(service URL, fault switches, the series stored there)."""
    faults = Faults(mounted(tmp_path / "faulty"))
    with serve(faults, log_level="critical") as url:
        service = f"{url}/dicom-web"
        series = mr_series(4, size=64, seed=7)
        store_instances(service, series, **FAST)
        faults.seen.clear()
        yield service, faults, series


def _series_url(service: str, series: list[Any]) -> str:
    return f"{service}/studies/{series[0].StudyInstanceUID}/series/{series[0].SeriesInstanceUID}"


def test_503_twice_then_success_is_retried(faulty: tuple[str, Faults, list[Any]], tmp_path: Path) -> None:
    service, faults, series = faulty
    faults.fail = 2
    files = retrieve_series(_series_url(service, series), tmp_path, timeout=10, retries=2, backoff=0.05)
    assert len(files) == 4 and faults.seen == ["GET"] * 3


def test_503_beyond_the_retries_fails_with_the_status(faulty: tuple[str, Faults, list[Any]], tmp_path: Path) -> None:
    service, faults, series = faulty
    faults.fail = 5
    with pytest.raises(RetrievalError) as err:
        retrieve_series(_series_url(service, series), tmp_path, timeout=10, retries=2, backoff=0.01)
    assert err.value.status == 503 and faults.seen == ["GET"] * 3


def test_404_is_not_retried(faulty: tuple[str, Faults, list[Any]], tmp_path: Path) -> None:
    service, faults, series = faulty
    with pytest.raises(RetrievalError) as err:
        retrieve_series(f"{service}/studies/{series[0].StudyInstanceUID}/series/9.9.9", tmp_path, **FAST)
    assert err.value.status == 404 and faults.seen == ["GET"]


def test_timeout_raises_retrieval_error(faulty: tuple[str, Faults, list[Any]], tmp_path: Path) -> None:
    service, faults, series = faulty
    faults.delay = 1.0
    began = time.monotonic()
    with pytest.raises(RetrievalError, match="timed out"):
        retrieve_series(_series_url(service, series), tmp_path, timeout=0.3, retries=1, backoff=0.01)
    assert time.monotonic() - began < 2.5
    assert faults.seen == ["GET"] * 2  # the read timeout was retried once


def test_transfer_cut_mid_body_is_restarted(faulty: tuple[str, Faults, list[Any]], tmp_path: Path) -> None:
    service, faults, series = faulty
    faults.cut, faults.cut_after = 1, 10_000  # inside the second instance (8 KB each)
    fetched = fetch_series(_series_url(service, series), tmp_path, **FAST)
    files = [r.path for r in fetched]
    assert len(files) == 4 and faults.seen == ["GET"] * 2
    assert {pydicom.dcmread(f).PixelData for f in files} == {d.PixelData for d in series}
    # the data sets of the broken first attempt are not kept beside the second's
    assert sorted(str(r.dataset.SOPInstanceUID) for r in fetched) == sorted(d.SOPInstanceUID for d in series)
    faults.cut, faults.cut_after = 5, 10_000
    with pytest.raises(RetrievalError):
        retrieve_series(_series_url(service, series), tmp_path / "again", timeout=10, retries=1, backoff=0.01)
    assert not list((tmp_path / "again").glob(".*"))  # only whole files, never a partial one


def test_store_is_retried_on_503(faulty: tuple[str, Faults, list[Any]]) -> None:
    service, faults, _ = faulty
    faults.fail = 1
    (ds,) = mr_series(1)
    (done,) = store_instances(service, [ds], **FAST)
    assert done.sop_instance_uid == ds.SOPInstanceUID and faults.seen == ["POST", "POST"]
