"""The built-in DICOMweb store as one Starlette app: STOW-RS, WADO-RS and QIDO-RS over a
directory of DICOM files, for ``aiw demo`` on a machine with no PACS.

It is mounted by the composing ``aiw`` package (at ``/dicom-web``), so every URL it
writes is built from the request's root path or from ``public_url``. It holds no lifespan
work: Starlette does not run a mounted app's lifespan, so the index is built here, when
the app is created.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from ups_server import logs
from ups_server.dicomweb.errors import DicomWebFailure, failure_response
from ups_server.dicomweb.index import Index
from ups_server.dicomweb.routes import dicomweb_routes
from ups_server.dicomweb.storage import FileStore, instance_uids
from ups_server.dicomweb.stow import StowService

DEFAULT_MAX_BODY_BYTES = 2 * 1024 ** 3


@dataclass
class DicomWebState:
    files: FileStore
    index: Index
    stow: StowService
    public_url: str | None


def rebuild_index(files: FileStore) -> Index:
    """The index from the files' headers. A file that is unreadable or not where its UIDs
    say is skipped and logged, not fatal: one bad file must not take the store down."""
    index = Index()
    for path in files.scan():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            uids = instance_uids(ds)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types; any unreadable file is skipped alike
            logs.log.warning("dicomweb: skipped unreadable file", path=str(path), error=str(exc))
            continue
        if files.path(uids.study, uids.series, uids.sop_instance) != path:
            logs.log.warning("dicomweb: skipped file not at the path its UIDs name", path=str(path))
            continue
        index.add(ds, uids, path)
    return index


def create_dicomweb_app(root: Path, *, public_url: str | None = None,
                        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Starlette:
    """A STOW/WADO/QIDO-RS service over ``root``; ``public_url`` is the service root as
    clients see it (else taken from each request); ``max_body_bytes`` caps one STOW
    request (413 above)."""
    files = FileStore(root)
    index = rebuild_index(files)

    async def refused(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, DicomWebFailure):  # Starlette's own 404/405
            code = getattr(exc, "status_code", 404)
            text = (f"{request.method} is not supported on {request.url.path}" if code == 405
                    else f"no DICOMweb resource at {request.url.path}")
            exc = DicomWebFailure(code, text)
        return failure_response(request, exc)

    app = Starlette(routes=dicomweb_routes(),
                    exception_handlers={DicomWebFailure: refused, 404: refused, 405: refused})
    app.state.dicomweb = DicomWebState(files, index, StowService(files, index, max_body_bytes), public_url)
    logs.log.info("dicomweb store ready", root=str(files.root), instances=len(index))
    return app
