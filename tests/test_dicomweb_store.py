"""The built-in DICOMweb store over real HTTP (uvicorn on a free port, mounted at
/dicom-web as ``aiw`` mounts it): STOW → QIDO → WADO round trips, partial failures, the
refusals, restart; and its multipart parser on its own.

WADO-RS bodies are decoded with dicomweb-client, not with the store's own parser, so a
framing bug cannot hide behind a matching bug on the other side.
"""

from __future__ import annotations

import io
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import orjson
import pydicom
import pytest
import uvicorn
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from tests.servers import free_port, wait_until
from ups_server.dicomweb import create_dicomweb_app
from ups_server.dicomweb.multipart import MultipartError, MultipartParser, PartData, PartEnd, PartStart

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
BOUNDARY = "aiw-test-boundary"


# ---------------------------------------------------------------- shared helpers

def mr_series(n: int = 8, size: int = 32, *, study: str | None = None, series: str | None = None,
              patient_id: str = "AIW-DW-1", seed: int = 0) -> list[Dataset]:
    """``n`` MR slices of ``size``² 16-bit random pixels, one series (file meta set)."""
    study, series = study or generate_uid(), series or generate_uid()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ds = Dataset()
        sop = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.AccessionNumber = patient_id, "DOE^JANE", "ACC-" + patient_id
        ds.StudyDate, ds.StudyTime, ds.Modality = "20240102", "101500", "MR"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 3, i + 1, "T1 axial"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.PixelData = rng.integers(0, 4096, size * size, dtype=np.uint16).tobytes()
        out.append(ds)
    return out


def dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def multipart(parts: list[bytes], boundary: str = BOUNDARY, part_type: str | None = "application/dicom") -> bytes:
    out = b""
    for data in parts:
        out += f"\r\n--{boundary}\r\n".encode()
        if part_type:
            out += f"Content-Type: {part_type}\r\n".encode()
        out += b"\r\n" + data
    return out + f"\r\n--{boundary}--\r\n".encode()


def stow_headers(boundary: str = BOUNDARY) -> dict[str, str]:
    return {"content-type": f'{DICOM_MULTIPART}; boundary="{boundary}"', "accept": "application/dicom+json"}


@contextmanager
def serve(app: ASGIApp, log_level: str = "warning") -> Iterator[str]:
    """An ASGI app under uvicorn in a thread on a free port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level,
                                           lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()

    def up() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn thread exited")
        return server.started

    wait_until(up, what=f"uvicorn :{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def mounted(root: Path, **kwargs: Any) -> Starlette:
    """The store mounted at /dicom-web, the way the ``aiw`` composition root mounts it."""
    return Starlette(routes=[Mount("/dicom-web", app=create_dicomweb_app(root, **kwargs))])


def uid_of(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    return values[0] if values else None


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(service URL, root) of a fresh store."""
    root = tmp_path / "store"
    with serve(mounted(root)) as url:
        yield f"{url}/dicom-web", root


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


# ---------------------------------------------------------------- STOW → QIDO → WADO

def test_round_trip_stow_qido_wado(store: tuple[str, Path], http: httpx.Client) -> None:
    base, root = store
    series = mr_series(8)
    st, se = series[0].StudyInstanceUID, series[0].SeriesInstanceUID
    sent = {ds.SOPInstanceUID: dicom_bytes(ds) for ds in series}
    r = http.post(f"{base}/studies", content=multipart(list(sent.values())), headers=stow_headers())
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom+json"
    body = r.json()
    assert body["00081190"]["Value"] == [f"{base}/studies/{st}"]
    assert "00081198" not in body
    refs = body["00081199"]["Value"]
    assert {uid_of(i, "00081155") for i in refs} == set(sent)
    for item in refs:
        sop = uid_of(item, "00081155")
        assert uid_of(item, "00081150") == MRImageStorage
        assert uid_of(item, "00081190") == f"{base}/studies/{st}/series/{se}/instances/{sop}"
        # stored as received, byte for byte
        assert (root / st / se / f"{sop}.dcm").read_bytes() == sent[sop]

    studies = http.get(f"{base}/studies", params={"StudyInstanceUID": st}).json()
    assert len(studies) == 1
    assert studies[0]["00201208"]["Value"] == [8] and studies[0]["00201206"]["Value"] == [1]
    assert studies[0]["00100020"]["Value"] == ["AIW-DW-1"]
    assert studies[0]["00080061"]["Value"] == ["MR"]
    assert [uid_of(s, "0020000D") for s in http.get(f"{base}/studies", params={"PatientID": "AIW-DW-*"}).json()] == [st]
    assert http.get(f"{base}/studies", params={"AccessionNumber": "ACC-AIW-DW-1"}).status_code == 200
    assert http.get(f"{base}/studies", params={"PatientID": "SOMEONE-ELSE"}).status_code == 204

    found = http.get(f"{base}/studies/{st}/series").json()
    assert len(found) == 1
    assert found[0]["0020000E"]["Value"] == [se] and found[0]["00080060"]["Value"] == ["MR"]
    assert found[0]["00201209"]["Value"] == [8] and found[0]["00200011"]["Value"] == [3]
    assert found[0]["0008103E"]["Value"] == ["T1 axial"]
    assert http.get(f"{base}/studies/{st}/series", params={"Modality": "CT"}).status_code == 204

    insts = http.get(f"{base}/studies/{st}/series/{se}/instances").json()
    assert [i["00200013"]["Value"][0] for i in insts] == list(range(1, 9))
    assert [uid_of(i, "00080018") for i in insts] == [ds.SOPInstanceUID for ds in series]
    assert len(http.get(f"{base}/studies/{st}/instances").json()) == 8
    assert len(http.get(f"{base}/studies/{st}/instances", params={"limit": 3, "offset": 6}).json()) == 2

    # WADO-RS, decoded by an independent implementation
    got = DICOMwebClient(base).retrieve_series(st, se)
    assert len(got) == 8
    by_uid = {ds.SOPInstanceUID: ds for ds in got}
    for ds in series:
        assert by_uid[ds.SOPInstanceUID].PixelData == ds.PixelData
        assert by_uid[ds.SOPInstanceUID].SeriesInstanceUID == se
    with http.stream("GET", f"{base}/studies/{st}/series/{se}", headers={"accept": DICOM_MULTIPART}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith(DICOM_MULTIPART + "; boundary=")
        assert resp.headers.get("transfer-encoding") == "chunked"  # streamed, not assembled
        assert "content-length" not in resp.headers
    one = DICOMwebClient(base).retrieve_instance(st, se, series[3].SOPInstanceUID)
    assert one.PixelData == series[3].PixelData
    assert len(DICOMwebClient(base).retrieve_study(st)) == 8

    meta = http.get(f"{base}/studies/{st}/series/{se}/metadata").json()
    assert len(meta) == 8 and all("7FE00010" not in m for m in meta)
    assert {m["00080018"]["Value"][0] for m in meta} == set(sent)
    assert len(http.get(f"{base}/studies/{st}/metadata").json()) == 8


def test_stow_partial_failure_is_202_and_names_each_failure(store: tuple[str, Path], http: httpx.Client) -> None:
    base, root = store
    good = mr_series(2)
    truncated = dicom_bytes(mr_series(1, study=good[0].StudyInstanceUID)[0])[:-300]
    parts = [dicom_bytes(good[0]), b"this is not DICOM at all", dicom_bytes(good[1]), truncated]
    r = http.post(f"{base}/studies", content=multipart(parts), headers=stow_headers())
    assert r.status_code == 202, r.text
    body = r.json()
    assert [uid_of(i, "00081155") for i in body["00081199"]["Value"]] == [good[0].SOPInstanceUID,
                                                                          good[1].SOPInstanceUID]
    failed = body["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000], [0xC000]]
    assert len(r.headers.get_list("warning")) == 2
    assert "part 2" in r.headers.get_list("warning")[0] and "truncated" in r.headers.get_list("warning")[1]
    st = good[0].StudyInstanceUID
    assert len(http.get(f"{base}/studies/{st}/instances").json()) == 2
    assert sorted(p.name for p in (root / st).rglob("*.dcm")) == sorted(f"{d.SOPInstanceUID}.dcm" for d in good)
    assert list((root / ".incoming").iterdir()) == []  # staging cleaned up


def test_study_mismatch_fails_that_instance(store: tuple[str, Path], http: httpx.Client) -> None:
    base, _ = store
    mine, other = mr_series(1), mr_series(1)
    st = mine[0].StudyInstanceUID
    body = multipart([dicom_bytes(mine[0]), dicom_bytes(other[0])])
    r = http.post(f"{base}/studies/{st}", content=body, headers=stow_headers())
    assert r.status_code == 202, r.text
    (failed,) = r.json()["00081198"]["Value"]
    assert uid_of(failed, "00081155") == other[0].SOPInstanceUID
    assert uid_of(failed, "00081150") == MRImageStorage
    assert failed["00081197"]["Value"] == [0xC409]
    only_wrong = http.post(f"{base}/studies/{st}", content=multipart([dicom_bytes(other[0])]), headers=stow_headers())
    assert only_wrong.status_code == 409
    assert http.get(f"{base}/studies", params={"StudyInstanceUID": other[0].StudyInstanceUID}).status_code == 204


def test_duplicates_replace_in_place_and_refuse_elsewhere(store: tuple[str, Path], http: httpx.Client) -> None:
    base, root = store
    (ds,) = mr_series(1)
    data = dicom_bytes(ds)
    for _ in range(2):
        assert http.post(f"{base}/studies", content=multipart([data]), headers=stow_headers()).status_code == 200
    st, se = ds.StudyInstanceUID, ds.SeriesInstanceUID
    assert len(http.get(f"{base}/studies/{st}/instances").json()) == 1
    assert (root / st / se / f"{ds.SOPInstanceUID}.dcm").read_bytes() == data
    ds.SeriesInstanceUID = generate_uid()  # same SOP Instance UID, another series
    r = http.post(f"{base}/studies", content=multipart([dicom_bytes(ds)]), headers=stow_headers())
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]
    assert not (root / st / ds.SeriesInstanceUID).exists()


def test_multipart_variants_real_clients_send(store: tuple[str, Path], http: httpx.Client) -> None:
    """Unquoted boundary, no CRLF before the first delimiter, a preamble and an epilogue,
    LF-only part headers, a part without Content-Type, tiny chunks on the wire."""
    base, _ = store
    a, b = mr_series(2)
    body = (b"preamble text\r\n--xyz\nContent-Type: application/dicom\n\n" + dicom_bytes(a)
            + b"\r\n--xyz  \r\n\r\n" + dicom_bytes(b) + b"\r\n--xyz--\r\nepilogue")

    def dribble() -> Iterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i:i + 7]

    r = http.post(f"{base}/studies", content=dribble(),
                  headers={"content-type": "Multipart/Related; boundary=xyz; type=application/dicom"})
    assert r.status_code == 200, r.text
    assert len(r.json()["00081199"]["Value"]) == 2


@pytest.mark.parametrize("content_type,body,status", [
    ("application/dicom", b"DICM", 415),
    ('multipart/related; type="application/dicom+json"; boundary=b', b"--b\r\n\r\n{}\r\n--b--", 415),
    ("multipart/form-data; boundary=b", b"--b\r\n\r\nx\r\n--b--", 415),
    (None, b"x", 415),
    ('multipart/related; type="application/dicom"', b"--b\r\n\r\nx\r\n--b--", 400),
    ('multipart/related; type="application/dicom"; boundary=b', b"--b\r\n\r\nno close delimiter", 400),
    ('multipart/related; type="application/dicom"; boundary=b', b"no delimiter at all", 400),
    ('multipart/related; type="application/dicom"; boundary=b', b"--b--\r\n", 400),
    ('multipart/related; type="application/dicom"; boundary=b', b"--b\r\nno colon here\r\n\r\nx\r\n--b--", 400),
])
def test_stow_refusals(store: tuple[str, Path], http: httpx.Client, content_type: str | None, body: bytes,
                       status: int) -> None:
    base, root = store
    headers = {"content-type": content_type} if content_type else {}
    r = http.post(f"{base}/studies", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["warning"].startswith(f"299 {base}: ")
    assert [p.name for p in root.iterdir()] == [".incoming"]


def test_malformed_body_stores_nothing_even_after_good_parts(store: tuple[str, Path], http: httpx.Client) -> None:
    base, root = store
    (ds,) = mr_series(1)
    cut = multipart([dicom_bytes(ds), dicom_bytes(ds)])[:-40]  # the second part never ends
    assert http.post(f"{base}/studies", content=cut, headers=stow_headers()).status_code == 400
    assert [p.name for p in root.iterdir()] == [".incoming"]
    assert list((root / ".incoming").iterdir()) == []


def test_size_cap(tmp_path: Path, http: httpx.Client) -> None:
    (ds,) = mr_series(1, size=64)
    data = multipart([dicom_bytes(ds)])
    with serve(mounted(tmp_path / "s", max_body_bytes=len(data) - 1)) as url:
        r = http.post(f"{url}/dicom-web/studies", content=data, headers=stow_headers())
        assert r.status_code == 413
        chunked = http.post(f"{url}/dicom-web/studies", content=iter([data[:5000], data[5000:]]),
                            headers=stow_headers())
        assert chunked.status_code == 413  # no Content-Length: counted while streaming
    assert not any(p.suffix == ".dcm" for p in (tmp_path / "s").rglob("*"))


def test_retrieve_negotiation_and_not_found(store: tuple[str, Path], http: httpx.Client) -> None:
    base, _ = store
    series = mr_series(2)
    http.post(f"{base}/studies", content=multipart([dicom_bytes(d) for d in series]), headers=stow_headers())
    st, se, sop = series[0].StudyInstanceUID, series[0].SeriesInstanceUID, series[0].SOPInstanceUID
    url = f"{base}/studies/{st}/series/{se}"
    for accept in (None, DICOM_MULTIPART, f"{DICOM_MULTIPART}; transfer-syntax=*",
                   f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.1", "*/*",
                   f'application/json, {DICOM_MULTIPART}; transfer-syntax="1.2.840.10008.1.2.1"'):
        r = http.get(url, headers={"accept": accept} if accept else {})
        assert r.status_code == 200, accept
    for accept in ("application/json", "application/dicom", 'multipart/related; type="image/jpeg"',
                   f"{DICOM_MULTIPART}; transfer-syntax=1.2.840.10008.1.2.4.50", f"{DICOM_MULTIPART}; q=0"):
        r = http.get(url, headers={"accept": accept})
        assert r.status_code == 406, accept
        assert "warning" in r.headers
    assert http.get(f"{base}/studies/1.2.3.4").status_code == 404
    assert http.get(f"{base}/studies/{st}/series/1.2.3.4").status_code == 404
    assert http.get(f"{url}/instances/1.2.3.4").status_code == 404
    assert http.get(f"{url}/instances/1.2.3.4/metadata").status_code == 404
    assert http.get(f"{url}/instances/{sop}").status_code == 200
    assert http.get(f"{base}/studies/not-a-uid").status_code == 400
    assert http.get(f"{base}/studies/1.2.03/series").status_code == 400
    assert http.get(f"{base}/nothing/here").status_code == 404
    assert http.delete(f"{base}/studies/{st}").status_code == 405
    # QIDO
    assert http.get(f"{base}/studies/1.2.3.4/series").status_code == 204
    assert http.get(f"{base}/studies/{st}/series/1.2.3.4/instances").status_code == 204
    assert http.get(f"{base}/studies", headers={"accept": "application/dicom"}).status_code == 406
    assert http.get(f"{url}/metadata", headers={"accept": DICOM_MULTIPART}).status_code == 406
    assert http.get(f"{base}/studies", params={"limit": "-1"}).status_code == 400
    assert http.get(f"{base}/studies", params={"NoSuchAttribute": "x"}).status_code == 400
    ignored = http.get(f"{base}/studies", params={"StudyInstanceUID": st, "StudyDescription": "x"})
    assert ignored.status_code == 200 and "StudyDescription" in ignored.headers["warning"]
    by_tag = http.get(f"{base}/studies", params={"0020000D": f"1.2.3,{st}"}).json()
    assert [uid_of(s, "0020000D") for s in by_tag] == [st]


def test_public_url_names_every_url(tmp_path: Path, http: httpx.Client) -> None:
    (ds,) = mr_series(1)
    with serve(mounted(tmp_path / "s", public_url="https://pacs.example.org/dicom-web/")) as url:
        r = http.post(f"{url}/dicom-web/studies", content=multipart([dicom_bytes(ds)]), headers=stow_headers())
        assert uid_of(r.json()["00081199"]["Value"][0], "00081190").startswith(
            "https://pacs.example.org/dicom-web/studies/")
        found = http.get(f"{url}/dicom-web/studies").json()
        assert uid_of(found[0], "00081190") == f"https://pacs.example.org/dicom-web/studies/{ds.StudyInstanceUID}"


def test_restart_rebuilds_the_index_from_the_files(tmp_path: Path, http: httpx.Client) -> None:
    root = tmp_path / "s"
    series = mr_series(3)
    with serve(mounted(root)) as url:
        http.post(f"{url}/dicom-web/studies", content=multipart([dicom_bytes(d) for d in series]),
                  headers=stow_headers())
        before = http.get(f"{url}/dicom-web/studies/{series[0].StudyInstanceUID}/instances").text.replace(url, "")
    (root / ".incoming" / "stow-crashed").mkdir()
    (root / ".incoming" / "stow-crashed" / "part-1").write_bytes(b"half a file")
    (root / "1.2.3" / "4.5").mkdir(parents=True)
    (root / "1.2.3" / "4.5" / "6.7.dcm").write_bytes(b"junk someone copied in")
    with serve(mounted(root)) as url:
        after = http.get(f"{url}/dicom-web/studies/{series[0].StudyInstanceUID}/instances").text.replace(url, "")
        assert after == before and len(orjson.loads(after)) == 3
        assert len(http.get(f"{url}/dicom-web/studies").json()) == 1  # the junk file is skipped
        assert DICOMwebClient(f"{url}/dicom-web").retrieve_instance(
            series[0].StudyInstanceUID, series[0].SeriesInstanceUID, series[0].SOPInstanceUID
        ).PixelData == series[0].PixelData
    assert list((root / ".incoming").iterdir()) == []


# ---------------------------------------------------------------- the parser alone

def _parse(body: bytes, boundary: str, step: int) -> list[tuple[dict[str, str], bytes]]:
    p = MultipartParser(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    ended = 0
    for i in range(0, len(body), step):
        for ev in p.feed(body[i:i + step]):
            if isinstance(ev, PartStart):
                parts.append((ev.headers, b""))
            elif isinstance(ev, PartData):
                parts[-1] = (parts[-1][0], parts[-1][1] + ev.data)
            elif isinstance(ev, PartEnd):
                ended += 1
    p.close()
    assert ended == len(parts)
    return parts


@pytest.mark.parametrize("step", [1, 2, 3, 5, 13, 64, 10_000])
def test_parser_is_independent_of_chunking(step: int) -> None:
    payloads = [b"", b"\r\n", b"--b", b"\r\n--bx lookalike\r\n--b-", bytes(range(256)) * 3]
    body = multipart(payloads, boundary="b")
    parts = _parse(body, "b", step)
    assert [data for _, data in parts] == payloads
    assert all(h == {"content-type": "application/dicom"} for h, _ in parts)


def test_parser_refusals() -> None:
    with pytest.raises(MultipartError, match="truncated"):
        _parse(b"--b\r\n\r\nxx", "b", 4)
    with pytest.raises(MultipartError, match="no delimiter"):
        _parse(b"nothing", "b", 4)
    with pytest.raises(MultipartError, match="header block"):
        _parse(b"--b\r\n" + b"X-Long: " + b"a" * 20_000 + b"\r\n\r\nx\r\n--b--", "b", 1000)
    with pytest.raises(MultipartError):
        MultipartParser("")
