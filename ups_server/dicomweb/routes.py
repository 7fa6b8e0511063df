"""The DICOMweb routes: parse the path and headers, call STOW / WADO / QIDO, render.

Every UID in a path is checked before it is looked up (a 400 naming the segment), an
unknown one is a 404, an Accept this store cannot satisfy a 406.
"""

from __future__ import annotations

from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from upsrs import dicomjson as dj
from ups_server.dicomweb import qido, wado
from ups_server.dicomweb.errors import DicomWebFailure, service_url, warning
from ups_server.dicomweb.index import Index, InstanceRecord, StudyRecord
from ups_server.dicomweb.multipart import parse_accept
from ups_server.dicomweb.storage import valid_uid
from ups_server.dicomweb.stow import Failed, StowService, response_body

DICOM_JSON = "application/dicom+json"
JSON_ACCEPTABLE = {"application/dicom+json", "application/json", "application/*", "*/*"}


def _index(request: Request) -> Index:
    return request.app.state.dicomweb.index


def _uid(request: Request, name: str) -> str:
    value = request.path_params[name]
    if not valid_uid(value):
        raise DicomWebFailure(400, f"the {name} UID in the path is not a valid UID: {value[:80]!r}")
    return value


def _check_json_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if accept and accept.strip() and not any(m.type in JSON_ACCEPTABLE for m in parse_accept(accept)):
        raise DicomWebFailure(406, f"cannot answer with {accept!r}; this resource is {DICOM_JSON}")


def _json(body: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    resp = Response(dj.dumps(body), status_code=status, media_type=DICOM_JSON)
    for k, v in headers or []:
        resp.headers.append(k, v)
    return resp


def _study(request: Request) -> StudyRecord:
    uid = _uid(request, "study")
    study = _index(request).study(uid)
    if study is None:
        raise DicomWebFailure(404, f"no study {uid} in this store")
    return study


def _records(request: Request) -> list[InstanceRecord]:
    """The instances a WADO-RS path names (study, series or instance), or 404."""
    study = _study(request)
    if "series" not in request.path_params:
        return _index(request).instances(study.uid)
    series_uid = _uid(request, "series")
    series = study.series.get(series_uid)
    if series is None:
        raise DicomWebFailure(404, f"no series {series_uid} in study {study.uid}")
    if "instance" not in request.path_params:
        return series.sorted_instances()
    sop = _uid(request, "instance")
    rec = series.instances.get(sop)
    if rec is None:
        raise DicomWebFailure(404, f"no instance {sop} in series {series_uid} of study {study.uid}")
    return [rec]


async def store(request: Request) -> Response:
    expected = _uid(request, "study") if "study" in request.path_params else None
    stow: StowService = request.app.state.dicomweb.stow
    outcomes = await stow.store(request, expected)
    status, body = response_body(service_url(request), outcomes)
    warnings = [("warning", warning(request, o.error.detail)) for o in outcomes if isinstance(o, Failed)][:20]
    return _json(body, status, warnings)


async def retrieve(request: Request) -> Response:
    records = _records(request)
    accept = request.headers.get("accept")
    syntaxes = {r.transfer_syntax_uid for r in records}
    if not wado.acceptable(accept, syntaxes):
        stored = ", ".join(sorted(syntaxes))
        raise DicomWebFailure(406, f"cannot answer with {accept!r}: this store sends multipart/related; "
                                   f'type="application/dicom" in the stored transfer syntax ({stored})')
    boundary = wado.new_boundary()
    return StreamingResponse(wado.multipart_stream(records, boundary), media_type=wado.content_type(boundary))


async def retrieve_metadata(request: Request) -> Response:
    records = _records(request)
    _check_json_accept(request)
    return _json(await anyio.to_thread.run_sync(wado.metadata, records))


def _search_response(request: Request, q: qido.Query, results: list[dict[str, Any]]) -> Response:
    headers = []
    if q.ignored:
        headers.append(("warning", warning(request, "The following attributes are not supported for matching "
                                                    f"and were ignored: {', '.join(q.ignored)}")))
    if not results:
        resp = Response(status_code=204)
        for k, v in headers:
            resp.headers.append(k, v)
        return resp
    return _json(results, 200, headers)


async def search_studies(request: Request) -> Response:
    _check_json_accept(request)
    q = qido.parse_query(request.query_params.multi_items(), "study")
    found = qido.select_studies(_index(request).studies.values(), q)
    service = service_url(request)
    return _search_response(request, q, [qido.render_study(service, s) for s in found])


async def search_series(request: Request) -> Response:
    _check_json_accept(request)
    q = qido.parse_query(request.query_params.multi_items(), "series")
    study = _index(request).study(_uid(request, "study"))
    if study is None:
        return _search_response(request, q, [])
    service = service_url(request)
    return _search_response(request, q, [qido.render_series(service, study, s) for s in qido.select_series(study, q)])


async def search_instances(request: Request) -> Response:
    _check_json_accept(request)
    q = qido.parse_query(request.query_params.multi_items(), "instance")
    study = _index(request).study(_uid(request, "study"))
    series = None
    if study is not None and "series" in request.path_params:
        series = study.series.get(_uid(request, "series"))
        if series is None:
            return _search_response(request, q, [])
    if study is None:
        return _search_response(request, q, [])
    service = service_url(request)
    found = qido.select_instances(study, series, q)
    return _search_response(request, q, [qido.render_instance(service, study, se, r) for se, r in found])


def dicomweb_routes() -> list[Route]:
    s = "/studies/{study}"
    se = f"{s}/series/{{series}}"
    i = f"{se}/instances/{{instance}}"
    return [
        Route("/studies", store, methods=["POST"]),
        Route("/studies", search_studies, methods=["GET"]),
        Route(s, store, methods=["POST"]),
        Route(s, retrieve, methods=["GET"]),
        Route(f"{s}/metadata", retrieve_metadata, methods=["GET"]),
        Route(f"{s}/series", search_series, methods=["GET"]),
        Route(f"{s}/instances", search_instances, methods=["GET"]),
        Route(se, retrieve, methods=["GET"]),
        Route(f"{se}/metadata", retrieve_metadata, methods=["GET"]),
        Route(f"{se}/instances", search_instances, methods=["GET"]),
        Route(i, retrieve, methods=["GET"]),
        Route(f"{i}/metadata", retrieve_metadata, methods=["GET"]),
    ]
