"""Run David Clunie's ``dciodvfy`` (dicom3tools) on a DICOM object and parse its verdict.

Why an external validator: our own code building *and* checking an object would share
its blind spots. ``dciodvfy`` checks an object against the IOD tables of the standard
(Type 1/2/1C attributes, enumerated values, VRs, sequence contents), independently of
pydicom and highdicom. Tests use it on every object the encoder writes, and ``aiw demo``
shows its verdict so a user can see the results are valid before they reach a PACS.

Its knowledge is that of its build (the Debian package is from 2022): IODs added to the
standard later (e.g. Label Map Segmentation, 2024) are reported as "Information Object
Not found". :class:`Report` passes every line on unchanged; judging such lines is the
caller's business, precisely and per message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

BINARY = "dciodvfy"


class DciodvfyNotInstalled(RuntimeError):
    """The ``dciodvfy`` binary is not on PATH."""


@dataclass(frozen=True)
class Report:
    """``dciodvfy``'s verdict: lines starting "Error" and "Warning", and the IOD it
    recognised (its first other line, e.g. "Segmentation", "Comprehensive3DSR")."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    iod: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        head = f"{self.iod or 'unknown IOD'}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        return "\n".join([head, *self.errors, *self.warnings])


def validate(obj: str | os.PathLike[str] | pydicom.Dataset, *, timeout: float = 120.0) -> Report:
    """Validate a DICOM file (path) or an in-memory dataset (written to a temporary Part
    10 file first, exactly as it would be sent)."""
    exe = shutil.which(BINARY)
    if exe is None:
        raise DciodvfyNotInstalled(f"{BINARY} not found on PATH: install dicom3tools "
                                   "(Debian/Ubuntu: apt-get install dicom3tools)")
    if isinstance(obj, pydicom.Dataset):
        with tempfile.TemporaryDirectory(prefix="aiw-dciodvfy-") as tmp:
            path = Path(tmp) / "object.dcm"
            pydicom.dcmwrite(path, obj, enforce_file_format=True)
            return _run(exe, path, timeout)
    path = Path(obj)
    if not path.is_file():
        raise FileNotFoundError(f"no such DICOM file: {path}")
    return _run(exe, path, timeout)


def _run(exe: str, path: Path, timeout: float) -> Report:
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, errors="replace", timeout=timeout)
    if proc.returncode < 0:
        raise RuntimeError(f"{BINARY} was killed by signal {-proc.returncode} on {path}")
    return parse(proc.stderr + proc.stdout)


def parse(text: str) -> Report:
    """Split ``dciodvfy`` output into errors, warnings and the recognised IOD name."""
    errors: list[str] = []
    warnings: list[str] = []
    iod: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Error"):
            errors.append(line)
        elif line.startswith("Warning"):
            warnings.append(line)
        elif iod is None:
            iod = line
    return Report(errors=errors, warnings=warnings, iod=iod)


__all__ = ["DciodvfyNotInstalled", "Report", "validate", "parse"]
