"""UPS-RS routes (PS3.18 chapter 11): parse the request, call the workitem service, render.

Tolerant where editions and implementations differ (spec digest sec. 7): UIDs and
Transaction UIDs in every query form they have been sent in, bodies as an object or an
array of one, optional requesting-AE suffixes.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from upsrs import dicomjson as dj
from upsrs import vr as vrs
from upsrs.errors import DatasetError, QueryError
from ups_server import responses
from ups_server.workitems import UpsFailure, WorkitemService

JSON_TYPES = ("application/dicom+json", "application/json")
ACCEPTABLE = ("application/dicom+json", "application/json", "application/*", "*/*", "*")


class TooLarge(Exception):
    pass


_SERVICE_URLS: dict[tuple[object, ...], str] = {}


def service_url(request: Request) -> str:
    """The service root URL as this client addressed it. Every reply names it (Warning,
    Location); ``request.url`` parses the whole URL each time, so the answer is kept per
    (scheme, Host header, server address, path prefix) — all it depends on."""
    settings = request.app.state.settings
    if settings.public_url:
        return settings.public_url.rstrip("/")
    scope = request.scope
    key = (scope.get("scheme"), next((v for k, v in scope["headers"] if k == b"host"), None), scope.get("server"),
           settings.path_prefix)
    url = _SERVICE_URLS.get(key)
    if url is None:
        url = f"{request.url.scheme}://{request.url.netloc}{settings.path_prefix}".rstrip("/")
        if len(_SERVICE_URLS) >= 256:  # Host headers are the client's to choose: stay bounded
            _SERVICE_URLS.clear()
        _SERVICE_URLS[key] = url
    return url


def _service(request: Request) -> WorkitemService:
    return request.app.state.workitems


async def _read_body(request: Request, transaction: str) -> bytes:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise UpsFailure(transaction, "too-large", f"the body is {declared} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UpsFailure(transaction, "too-large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype and ctype not in JSON_TYPES:
        raise UpsFailure(transaction, "media", f"Content-Type {ctype!r} is not supported; send application/dicom+json")
    return body


def _check_accept(request: Request, transaction: str) -> None:
    # The query is parsed here only if it can hold an ``accept`` key: one written so, or
    # percent-encoded. Most requests have none, and a claim or retrieve reads no other.
    qs = request.scope.get("query_string", b"")
    asked = request.query_params.get("accept") if b"accept" in qs or b"%" in qs else None
    accept = asked or request.headers.get("accept")
    if not accept:
        return
    types = [t.split(";")[0].strip().lower() for t in accept.split(",")]
    if not any(t in ACCEPTABLE for t in types):
        raise UpsFailure(transaction, "not-acceptable", f"cannot answer with {accept!r}; this server sends application/dicom+json")


def _bare_key(request: Request, *names: str) -> str | None:
    """A value given as ``?name=v`` for any of ``names`` (any case), or as a bare ``?v``."""
    if not request.scope.get("query_string"):
        return None  # most creates: no query to parse
    lowered = {n.lower() for n in names}
    for k, v in request.query_params.multi_items():
        if k.lower() in lowered and v:
            return v
    for k, v in request.query_params.multi_items():
        if v == "" and k and not vrs.check_value("UI", k):
            return k
    return None


def _requesting_ae(request: Request) -> str:
    aet = request.path_params.get("aet") or request.query_params.get("requester")
    if aet is None:
        return request.app.state.settings.default_requesting_ae
    msg = vrs.check_value("AE", aet)
    if msg or not aet.strip():
        raise UpsFailure("cancelrequest", "0106", f"requesting AE title {aet!r}: {msg or 'empty'}")
    return aet


Handler = Callable[[Request], Awaitable[Response]]


def ups_route(transaction: str) -> Callable[[Handler], Handler]:
    """Turns refusals (UpsFailure, bad datasets, bad queries) into their 4xx responses."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            uid = request.path_params.get("uid")
            if uid:
                request.scope["state"]["workitem"] = uid
            try:
                resp = await fn(request)
            except UpsFailure as exc:
                request.scope["state"]["outcome"] = exc.status
                return responses.failure(service_url(request), exc)
            except DatasetError as exc:
                request.scope["state"]["outcome"] = exc.status
                return responses.failure(service_url(request), UpsFailure.invalid(transaction, exc))
            except QueryError as exc:
                request.scope["state"]["outcome"] = "0110"
                return responses.failure(service_url(request), UpsFailure(transaction, "0110", str(exc)))
            return resp

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def _done(request: Request, rep, location: str | None = None) -> Response:  # type: ignore[no-untyped-def]
    request.scope["state"]["outcome"] = rep.status
    if rep.uid:
        request.scope["state"]["workitem"] = rep.uid
    return responses.reply(service_url(request), rep, location)


@ups_route("create")
async def create_workitem(request: Request) -> Response:
    """
    summary: Create Workitem (RAD-80, N-CREATE)
    description: One workitem as DICOM JSON (object or array of one). The UID comes from
      ?workitem=, ?AffectedSOPInstanceUID=, a bare ?uid, or SOP Instance UID in the body.
    responses:
      201: {description: created; Location and Content-Location name the workitem}
      400: {description: the dataset violates Table CC.2.5-3 N-CREATE requirements}
      409: {description: a workitem with this UID exists}
      413: {description: body too large}
      415: {description: unsupported Content-Type}
    """
    _check_accept(request, "create")
    body = await _read_body(request, "create")
    ds = dj.parse_body(body)
    uid = _bare_key(request, "workitem", "AffectedSOPInstanceUID")
    rep = await _service(request).create(uid, ds)
    return _done(request, rep, f"{service_url(request)}/workitems/{rep.uid}")


@ups_route("retrieve")
async def retrieve_workitem(request: Request) -> Response:
    """
    summary: Retrieve Workitem (RAD-83, N-GET)
    description: The workitem as a DICOM JSON array of one object; never its Transaction UID.
    responses:
      200: {description: the workitem}
      404: {description: unknown workitem}
      410: {description: deleted after its retention period}
    """
    _check_accept(request, "retrieve")
    return _done(request, await _service(request).retrieve(request.path_params["uid"]))


@ups_route("update")
async def update_workitem(request: Request) -> Response:
    """
    summary: Update Workitem (RAD-84, N-SET)
    description: Attributes to change (sequences replace the stored ones whole). Transaction
      UID by ?transaction-uid=, ?transaction=, a bare ?tuid or (0008,1195) in the dataset.
    responses:
      200: {description: updated}
      400: {description: invalid dataset, Transaction UID missing/incorrect, final state}
      404: {description: unknown workitem}
      409: {description: Transaction UID sent for a workitem that is not claimed}
    """
    _check_accept(request, "update")
    body = await _read_body(request, "update")
    ds = dj.parse_body(body)
    tuid = _bare_key(request, "transaction-uid", "transaction", "transactionuid")
    return _done(request, await _service(request).update(request.path_params["uid"], tuid, ds))


@ups_route("change-state")
async def change_state(request: Request) -> Response:
    """
    summary: Change Workitem State (RAD-82 claim, RAD-85 complete, cancel)
    description: Dataset with Procedure Step State and Transaction UID (PS3.4 Table CC.1.1-2).
    responses:
      200: {description: changed, or already in that final state (Warning)}
      400: {description: payload invalid, Transaction UID missing or incorrect}
      404: {description: unknown workitem}
      409: {description: the request is inconsistent with the workitem's state}
    """
    _check_accept(request, "change-state")
    body = await _read_body(request, "change-state")
    ds = dj.parse_body(body)
    return _done(request, await _service(request).change_state(request.path_params["uid"], ds))


@ups_route("cancelrequest")
async def request_cancellation(request: Request) -> Response:
    """
    summary: Request Cancellation (RAD-88)
    description: Optional dataset with Reason For Cancellation, Procedure Step
      Discontinuation Reason Code Sequence, Contact URI and Contact Display Name. The
      requesting AE comes from the optional /{aet} suffix or ?requester=.
    responses:
      202: {description: accepted (SCHEDULED are canceled by the server; IN PROGRESS notify the performer)}
      404: {description: unknown workitem}
      409: {description: the workitem is COMPLETED}
    """
    _check_accept(request, "cancelrequest")
    body = await _read_body(request, "cancelrequest")
    ds = dj.parse_body(body) if body.strip() else {}
    requester = _requesting_ae(request)
    return _done(request, await _service(request).request_cancel(request.path_params["uid"], ds, requester))


@ups_route("search")
async def search_workitems(request: Request) -> Response:
    """
    summary: Search for Workitems (RAD-81, C-FIND)
    description: Matching keys as attribute=value (keyword or tag, dotted for sequences),
      includefield, limit, offset, fuzzymatching, emptyvaluematching, multiplevaluematching.
    responses:
      200: {description: matching workitems (paging Warning when more remain)}
      204: {description: no match}
      400: {description: invalid query}
    """
    _check_accept(request, "search")
    query = _service(request).queries.get(request.scope.get("query_string", b""), request.query_params.multi_items)
    return _done(request, await _service(request).search(query))


async def healthz(request: Request) -> Response:
    """
    summary: Liveness and Redis reachability
    responses:
      200: {description: the server and its store answer}
      503: {description: the store does not answer}
    """
    try:
        await request.app.state.redis.ping()
    except Exception as exc:  # any store failure is "not healthy", never a crash
        return JSONResponse({"status": "unavailable", "store": str(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "store": request.app.state.store_kind, **request.app.state.fanout.stats()})


def workitem_routes(prefix: str) -> list[Route]:
    p = prefix.rstrip("/")
    return [
        Route(f"{p}/workitems", create_workitem, methods=["POST"]),
        Route(f"{p}/workitems", search_workitems, methods=["GET"]),
        Route(f"{p}/workitems/{{uid}}", retrieve_workitem, methods=["GET"]),
        Route(f"{p}/workitems/{{uid}}", update_workitem, methods=["POST"]),
        Route(f"{p}/workitems/{{uid}}/state", change_state, methods=["PUT"]),
        Route(f"{p}/workitems/{{uid}}/state/{{aet}}", change_state, methods=["PUT"]),
        Route(f"{p}/workitems/{{uid}}/cancelrequest", request_cancellation, methods=["POST"]),
        Route(f"{p}/workitems/{{uid}}/cancelrequest/{{aet}}", request_cancellation, methods=["POST"]),
    ]
