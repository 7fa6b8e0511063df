"""WADO-RS (PS3.18 10.4): instances as multipart/related of application/dicom, streamed
file by file; and metadata as DICOM JSON without bulk data.

The store never transcodes: each instance goes out in the transfer syntax it was stored
in. So an Accept naming a transfer syntax is honoured only if every instance of the
response has it; ``transfer-syntax=*`` or none at all takes them as stored (strictly, no
parameter means Explicit VR Little Endian; what STOW clients send is nearly always that,
and refusing the rest would only make a demo store useless to naive clients).
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any, Iterable, Iterator

import pydicom

from ups_server.dicomweb.index import InstanceRecord
from ups_server.dicomweb.multipart import parse_accept

DICOM = "application/dicom"
CHUNK = 1024 * 1024
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024


def acceptable(accept: str | None, syntaxes: set[str]) -> bool:
    """Whether some media range of ``accept`` is satisfied by a multipart/related of
    application/dicom in the stored ``syntaxes``. No Accept header = the default, which is
    that."""
    if not accept or not accept.strip():
        return True
    for media in parse_accept(accept):
        if media.type in ("*/*", "multipart/*") and media.param("type") is None:
            return True
        if media.type != "multipart/related":
            continue
        if (media.param("type") or DICOM).lower() != DICOM:
            continue
        ts = media.param("transfer-syntax")
        if ts is None or ts == "*" or syntaxes <= {ts}:
            return True
    return False


def new_boundary() -> str:
    return uuid.uuid4().hex


def content_type(boundary: str) -> str:
    return f'multipart/related; type="{DICOM}"; boundary={boundary}'


def multipart_stream(records: Iterable[InstanceRecord], boundary: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """The body, one file at a time, ``chunk`` bytes at a time (a sync iterator: Starlette
    runs it in a worker thread, so disk reads do not block the event loop).

    A file that vanished after the index was read would leave the response short; files
    are only ever replaced (os.replace keeps the open one readable), never deleted, so
    that cannot happen short of someone deleting them by hand."""
    first = True
    for rec in records:
        with open(rec.path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            yield ((b"" if first else b"\r\n") + f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax="
                   f"{rec.transfer_syntax_uid}\r\nContent-Length: {size}\r\n\r\n".encode("ascii"))
            first = False
            while data := f.read(chunk):
                yield data
    yield (b"" if first else b"\r\n") + f"--{boundary}--\r\n".encode("ascii")


def _strip_bulk(ds: pydicom.Dataset) -> None:
    """Drop binary values larger than :data:`BULK_THRESHOLD`, in nested items too: the
    metadata resource is for headers, and we serve no BulkDataURI to point at them."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                _strip_bulk(item)
        elif elem.VR in BULK_VRS and elem.value is not None and len(elem.value) > BULK_THRESHOLD:
            del ds[elem.tag]


def metadata(records: Iterable[InstanceRecord]) -> list[dict[str, Any]]:
    """DICOM JSON of each instance's header (read up to the pixel data, which is bulk)."""
    out = []
    for rec in records:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(rec.path, stop_before_pixels=True)
            _strip_bulk(ds)
            out.append(ds.to_json_dict(suppress_invalid_tags=True))  # one odd value must not fail the whole answer
    return out
