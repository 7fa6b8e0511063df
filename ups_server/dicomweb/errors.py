"""Refusals of the DICOMweb store: one exception, one rendering (status, text/plain body,
``Warning: 299 <service>: <text>``), the same shape as the UPS-RS routes' refusals."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ups_server.responses import header_safe


class DicomWebFailure(Exception):
    """A request the store refuses; ``detail`` names the field or header at fault."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def service_url(request: Request) -> str:
    """The store's root as clients see it: the configured public URL, else this request's
    scheme, host and root path (the mount point, e.g. ``/dicom-web``)."""
    public = request.app.state.dicomweb.public_url
    if public:
        return public.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}".rstrip("/")


def warning(request: Request, text: str) -> str:
    return header_safe(f"299 {service_url(request)}: {text}")


def failure_response(request: Request, exc: DicomWebFailure) -> Response:
    resp = Response(exc.detail + "\n", status_code=exc.status, media_type="text/plain; charset=utf-8")
    resp.headers.append("warning", warning(request, exc.detail))
    return resp
