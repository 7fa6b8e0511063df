"""Subscription routes (PS3.18 11.10–11.12, RAD-86): Subscribe, Unsubscribe, Suspend.

Filters of a filtered worklist subscription come in both syntaxes the field uses:
``filter=Attr=value,Attr=value`` (2024c; ``,`` and ``=`` inside values percent-encoded)
and plain ``Attr=value`` parameters (2016e, dcm4chee).
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from upsrs.errors import QueryError
from upsrs.matching import RESERVED, build_matchers
from upsrs.uids import FILTERED_GLOBAL_SUBSCRIPTION
from ups_server.channel import valid_aet
from ups_server.routes import _done, service_url, ups_route
from ups_server.subscribe import SubscriptionService
from ups_server.workitems import UpsFailure


def _service(request: Request) -> SubscriptionService:
    return request.app.state.subscriptions


def channel_url(request: Request, aet: str) -> str:
    base = service_url(request)
    return ("wss" + base[5:] if base.startswith("https") else "ws" + base[4:]) + f"/subscribers/{aet}"


def _aet(request: Request, transaction: str) -> str:
    aet = request.path_params["aet"]
    problem = valid_aet(aet)
    if problem:
        raise UpsFailure(transaction, "0106", f"AE title {aet!r}: {problem}")
    return aet.strip()


def _deletion_lock(request: Request) -> bool:
    raw = next((v for k, v in request.query_params.multi_items() if k.lower() == "deletionlock"), None)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise UpsFailure("subscribe", "0106", f"deletionlock must be true or false, not {raw!r}")
    return raw.lower() == "true"


def filter_pairs(raw_query: str) -> list[tuple[str, str]]:
    """Matching keys of a filtered subscription from the raw query string (both syntaxes)."""
    pairs: list[tuple[str, str]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        key = unquote_plus(key)
        if key.lower() == "filter":
            if "=" not in value:
                # the whole list percent-encoded (as HTTP libraries do): split after decoding,
                # at the cost of ',' inside values
                items, decode = unquote_plus(value).split(","), str
            else:
                items, decode = value.split(","), unquote_plus
            for item in items:
                if not item:
                    continue
                attr, eq, val = item.partition("=")
                if not eq:
                    raise QueryError(f"filter item {unquote_plus(item)!r} is not Attribute=value")
                pairs.append((decode(attr), decode(val)))
        elif key.lower() not in RESERVED:
            pairs.append((key, unquote_plus(value)))
    return pairs


@ups_route("subscribe")
async def subscribe(request: Request) -> Response:
    """
    summary: Subscribe (RAD-86) to a workitem, the worklist (1.2.840.10008.5.1.4.34.5) or a filtered worklist (…5.1)
    description: deletionlock=true|false; for the filtered worklist, filter=Attr=value,… or Attr=value parameters.
      The response's Content-Location (and Location) is the WebSocket URL of the event channel.
    responses:
      201: {description: subscribed}
      400: {description: bad AE title, deletionlock value or filter}
      404: {description: unknown workitem}
    """
    aet = _aet(request, "subscribe")
    lock = _deletion_lock(request)
    target = request.path_params["uid"]
    pairs = filter_pairs(request.url.query) if target == FILTERED_GLOBAL_SUBSCRIPTION else []
    matchers = build_matchers(pairs)
    rep = await _service(request).subscribe(target, aet, lock, matchers, pairs)
    return _done(request, rep, channel_url(request, aet))


@ups_route("unsubscribe")
async def unsubscribe(request: Request) -> Response:
    """
    summary: Unsubscribe (RAD-86); from a well-known UID it ends every subscription of the AE
    responses:
      200: {description: unsubscribed}
      404: {description: unknown workitem}
    """
    aet = _aet(request, "unsubscribe")
    return _done(request, await _service(request).unsubscribe(request.path_params["uid"], aet))


@ups_route("suspend")
async def suspend(request: Request) -> Response:
    """
    summary: Suspend Global Subscription (RAD-86) - no new workitems; existing subscriptions stay
    responses:
      200: {description: suspended}
      404: {description: the AE has no such global subscription}
    """
    aet = _aet(request, "suspend")
    return _done(request, await _service(request).suspend(request.path_params["uid"], aet))


def subscription_routes(prefix: str) -> list[Route]:
    p = prefix.rstrip("/")
    return [
        Route(f"{p}/workitems/{{uid}}/subscribers/{{aet}}", subscribe, methods=["POST"]),
        Route(f"{p}/workitems/{{uid}}/subscribers/{{aet}}", unsubscribe, methods=["DELETE"]),
        Route(f"{p}/workitems/{{uid}}/subscribers/{{aet}}/suspend", suspend, methods=["POST"]),
    ]
