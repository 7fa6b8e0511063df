"""Instances as files: ``root/{study}/{series}/{sop}.dcm``, exactly the bytes that were
stored (no re-encoding, so a retrieve returns what STOW received).

Writes are crash-safe per instance: a part is written to a staging file under
``root/.incoming``, checked, fsynced, and moved into place with ``os.replace``. A crash
leaves either the old file or the new one, never half of one; staging left by a crash is
removed at the next start.

UIDs become path components only after :func:`valid_uid` (digits and dots, at most 64
characters), so no request can name a path outside ``root``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError

INCOMING = ".incoming"
UNDEFINED_LENGTH = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def valid_uid(value: str | None) -> bool:
    """A UID as PS3.5 9.1 has it: dot-separated numbers without leading zeros, ≤ 64."""
    return bool(value) and len(value) <= 64 and _UID.fullmatch(value) is not None  # type: ignore[arg-type]


class NotAnInstance(Exception):
    """A stored part that is not a usable DICOM instance; ``reason`` is a Failure Reason
    (PS3.18 Table I.2-2) and the UIDs are whatever could be read."""

    def __init__(self, reason: int, detail: str, sop_class_uid: str = "", sop_instance_uid: str = ""):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


CANNOT_UNDERSTAND = 0xC000  # Cxxx: not DICOM, or not readable
DOES_NOT_MATCH = 0xA900  # A9xx: data set does not match its SOP Class (type 1 UIDs missing/invalid)


def read_header(path: Path) -> pydicom.Dataset:
    """The data set of a PS3.10 file, bulk values left on disk, after checking that every
    top-level element lies inside the file.

    pydicom reads a truncated file without complaint (the last value is just short), so
    the check is ours: a cut-off upload must fail, not be stored as an instance.
    """
    size = path.stat().st_size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid values are judged below, by us
            ds = pydicom.dcmread(path, defer_size=4096)
    except InvalidDicomError as exc:
        raise NotAnInstance(CANNOT_UNDERSTAND, f"not a DICOM PS3.10 file: {exc}") from None
    except Exception as exc:  # pydicom raises many types on garbage
        raise NotAnInstance(CANNOT_UNDERSTAND, f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
    if getattr(ds.file_meta, "TransferSyntaxUID", None) is None:
        raise NotAnInstance(CANNOT_UNDERSTAND, "the File Meta Information has no Transfer Syntax UID (0002,0010)")
    if ds.file_meta.TransferSyntaxUID != DEFLATED:  # a deflated body is inflated in memory
        for tag in list(ds.keys()):
            raw = ds.get_item(tag)
            if not isinstance(raw, RawDataElement) or raw.length == UNDEFINED_LENGTH:
                continue
            short = (raw.value_tell + raw.length > size) if raw.value is None else len(raw.value) < raw.length
            if short:
                raise NotAnInstance(CANNOT_UNDERSTAND, f"the file is truncated inside element {tag} "
                                                       f"({raw.length} bytes declared)")
    return ds


@dataclass(frozen=True)
class InstanceUids:
    study: str
    series: str
    sop_class: str
    sop_instance: str
    transfer_syntax: str


def instance_uids(ds: pydicom.Dataset) -> InstanceUids:
    """The four identifying UIDs, each checked: they name files, so a bad one is refused
    with the attribute it is in."""
    got = {k: str(ds.get(k, "") or "") for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                               "SeriesInstanceUID")}
    for name, value in got.items():
        if not valid_uid(value):
            what = "is missing" if not value else f"is not a valid UID: {value[:80]!r}"
            raise NotAnInstance(DOES_NOT_MATCH, f"{name} {what}",
                                got["SOPClassUID"] if valid_uid(got["SOPClassUID"]) else "",
                                got["SOPInstanceUID"] if valid_uid(got["SOPInstanceUID"]) else "")
    return InstanceUids(got["StudyInstanceUID"], got["SeriesInstanceUID"], got["SOPClassUID"], got["SOPInstanceUID"],
                        str(ds.file_meta.TransferSyntaxUID))


class FileStore:
    """The directory tree and its staging area."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.incoming = self.root / INCOMING
        shutil.rmtree(self.incoming, ignore_errors=True)  # staging a crash left behind
        self.incoming.mkdir()

    def path(self, study: str, series: str, sop: str) -> Path:
        return self.root / study / series / f"{sop}.dcm"

    def staging_dir(self) -> Path:
        """A private directory for one request's parts, on the same file system as the
        store so that commit is a rename."""
        return Path(tempfile.mkdtemp(prefix="stow-", dir=self.incoming))

    def commit(self, staged: Path, uids: InstanceUids) -> Path:
        """Move a checked staging file into place (fsynced first: the rename must not
        reach the disk before the data does)."""
        target = self.path(uids.study, uids.series, uids.sop_instance)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(staged, "rb") as f:
            os.fsync(f.fileno())
        os.replace(staged, target)
        return target

    def scan(self) -> Iterator[Path]:
        """Every stored file, in a stable order (study, series, instance)."""
        for study in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != INCOMING):
            for series in sorted(p for p in study.iterdir() if p.is_dir()):
                yield from sorted(series.glob("*.dcm"))
