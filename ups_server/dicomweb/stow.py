"""STOW-RS (PS3.18 10.5): receive a multipart/related body part by part onto disk, check
each part, commit the good ones, answer with a Store Instances Response (Annex I).

Decisions worth knowing:

- Nothing is stored unless the whole body parses: parts are staged first and committed
  only after the close delimiter, so a malformed or oversized request (400/413) changes
  nothing. Each instance is then committed atomically on its own.
- Same SOP Instance UID again, in the same study and series: the new file replaces the
  old and the instance is reported stored. Re-sending is what a client does after a lost
  response, so STOW is idempotent for it; identical bytes give an identical store.
- Same SOP Instance UID in another study or series: refused (Failure Reason 0x0111,
  "Duplicate SOP Instance" in PS3.7), because replacing it would leave two copies.
- Study Instance UID mismatch under ``POST /studies/{study}``: PS3.18 defines no code for
  it (Table I.2-2 has none, and "additional codes may be used"); we answer 0xC409 as
  dcm4chee-arc does. Orthanc 1.10 answers 0x0110 (Processing failure) for the same case.
- Parts that are not DICOM are reported in the Failed SOP Sequence with empty UIDs (there
  is nothing to name them by) and explained in a Warning header each.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from starlette.requests import ClientDisconnect, Request

from upsrs.dicomjson import element
from ups_server.dicomweb.errors import DicomWebFailure
from ups_server.dicomweb.index import Index
from ups_server.dicomweb.multipart import (MultipartError, MultipartParser, PartData, PartEnd, PartStart,
                                           parse_media_type)
from ups_server.dicomweb.storage import CANNOT_UNDERSTAND, FileStore, InstanceUids, NotAnInstance, instance_uids, \
    read_header

DICOM = "application/dicom"
STUDY_MISMATCH = 0xC409
DUPLICATE_SOP_INSTANCE = 0x0111
OUT_OF_RESOURCES = 0xA700


@dataclass
class StagedPart:
    number: int
    path: Path
    content_type: str | None


@dataclass
class Stored:
    uids: InstanceUids


@dataclass
class Failed:
    part: int
    error: NotAnInstance


def check_content_type(value: str | None) -> str:
    """The boundary of a STOW-RS body; 415 for anything but multipart/related of
    application/dicom (a missing ``type`` parameter is taken as application/dicom)."""
    media = parse_media_type(value or "")
    if media.type != "multipart/related":
        raise DicomWebFailure(415, f"Content-Type {value or '(none)'!r} is not supported: send "
                                   f'multipart/related; type="{DICOM}"; boundary=...')
    root = (media.param("type") or DICOM).lower()
    if root != DICOM:
        raise DicomWebFailure(415, f"Content-Type parameter type={root!r} is not supported: this store accepts "
                                   f'type="{DICOM}" (DICOM PS3.10 files), not metadata and bulk data')
    boundary = media.param("boundary")
    if not boundary:
        raise DicomWebFailure(400, "the Content-Type multipart/related has no boundary parameter")
    return boundary


async def receive_parts(request: Request, staging: Path, max_bytes: int) -> list[StagedPart]:
    """Stream the body into one staging file per part; memory holds one chunk."""
    boundary = check_content_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DicomWebFailure(413, f"the body is {declared} bytes; this store accepts at most {max_bytes}")
    try:
        parser = MultipartParser(boundary)
    except MultipartError as exc:
        raise DicomWebFailure(400, f"Content-Type boundary: {exc}") from None
    parts: list[StagedPart] = []
    out: BinaryIO | None = None
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes:
                raise DicomWebFailure(413, f"the body exceeds {max_bytes} bytes, the most this store accepts")
            for event in parser.feed(chunk):
                if isinstance(event, PartStart):
                    part = StagedPart(len(parts) + 1, staging / f"part-{len(parts) + 1}", event.content_type)
                    parts.append(part)
                    out = open(part.path, "wb")
                elif isinstance(event, PartData):
                    assert out is not None
                    out.write(event.data)
                elif isinstance(event, PartEnd):
                    assert out is not None
                    out.close()
                    out = None
        parser.close()
    except MultipartError as exc:
        raise DicomWebFailure(400, f"malformed multipart body: {exc}") from None
    except ClientDisconnect:
        raise DicomWebFailure(400, "the client disconnected before the body was complete") from None
    except OSError as exc:  # disk full, quota: the store's resources, not a bug
        raise DicomWebFailure(507, f"the store could not stage the body: {exc.strerror or exc}") from None
    finally:
        if out is not None:
            out.close()
    if not parts:
        raise DicomWebFailure(400, "the multipart body has no parts: there is nothing to store")
    return parts


def inspect_part(part: StagedPart) -> tuple[InstanceUids, Any]:
    media = parse_media_type(part.content_type or DICOM)
    if media.type != DICOM:
        raise NotAnInstance(CANNOT_UNDERSTAND, f"part {part.number}: Content-Type {part.content_type!r} is not "
                                               f"{DICOM}")
    try:
        ds = read_header(part.path)
        return instance_uids(ds), ds
    except NotAnInstance as exc:
        exc.detail = f"part {part.number}: {exc.detail}"
        raise


class StowService:
    """Receive, check, commit, index. One lock orders the commits, so the duplicate check
    and the rename it guards cannot interleave with another request's."""

    def __init__(self, files: FileStore, index: Index, max_bytes: int):
        self.files = files
        self.index = index
        self.max_bytes = max_bytes
        self._lock = asyncio.Lock()

    async def store(self, request: Request, expected_study: str | None) -> list[Stored | Failed]:
        staging = self.files.staging_dir()
        try:
            parts = await receive_parts(request, staging, self.max_bytes)
            return [await self._one(part, expected_study) for part in parts]
        finally:
            await anyio.to_thread.run_sync(shutil.rmtree, staging, True)

    async def _one(self, part: StagedPart, expected_study: str | None) -> Stored | Failed:
        try:
            uids, ds = await anyio.to_thread.run_sync(inspect_part, part)
        except NotAnInstance as exc:
            return Failed(part.number, exc)
        if expected_study is not None and uids.study != expected_study:
            return Failed(part.number, NotAnInstance(
                STUDY_MISMATCH, f"part {part.number}: StudyInstanceUID {uids.study} is not the study of the request "
                                f"URL ({expected_study})", uids.sop_class, uids.sop_instance))
        async with self._lock:
            where = self.index.location(uids.sop_instance)
            if where is not None and where != (uids.study, uids.series):
                return Failed(part.number, NotAnInstance(
                    DUPLICATE_SOP_INSTANCE, f"part {part.number}: SOP Instance {uids.sop_instance} is already stored "
                                            f"in study {where[0]}, series {where[1]}", uids.sop_class,
                    uids.sop_instance))
            try:
                path = await anyio.to_thread.run_sync(self.files.commit, part.path, uids)
            except OSError as exc:
                return Failed(part.number, NotAnInstance(
                    OUT_OF_RESOURCES, f"part {part.number}: could not be written: {exc.strerror or exc}",
                    uids.sop_class, uids.sop_instance))
            self.index.add(ds, uids, path)
        return Stored(uids)


def instance_url(service: str, uids: InstanceUids) -> str:
    return f"{service}/studies/{uids.study}/series/{uids.series}/instances/{uids.sop_instance}"


def response_body(service: str, outcomes: list[Stored | Failed]) -> tuple[int, dict[str, Any]]:
    """The Store Instances Response and its status: 200 all stored, 202 some, 409 none."""
    stored = [o.uids for o in outcomes if isinstance(o, Stored)]
    failed = [o.error for o in outcomes if isinstance(o, Failed)]
    studies = {u.study for u in stored}
    body: dict[str, Any] = {
        "00081190": element("UR", f"{service}/studies/{next(iter(studies))}") if len(studies) == 1 else element("UR"),
    }
    if failed:
        body["00081198"] = element("SQ", *[{
            "00081150": element("UI", *[e.sop_class_uid] if e.sop_class_uid else []),
            "00081155": element("UI", *[e.sop_instance_uid] if e.sop_instance_uid else []),
            "00081197": element("US", e.reason),
        } for e in failed])
    if stored:
        body["00081199"] = element("SQ", *[{
            "00081150": element("UI", u.sop_class),
            "00081155": element("UI", u.sop_instance),
            "00081190": element("UR", instance_url(service, u)),
        } for u in stored])
    status = 200 if not failed else 202 if stored else 409
    return status, body
