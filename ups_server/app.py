"""The Task Manager application: Starlette routes over the Redis workitem store, and the
event channel fed by the Redis event stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.schemas import SchemaGenerator

from upsrs import dicomjson as dj
from upsrs import events as ev
from upsrs import schema as ups_schema
from upsrs.uids import GLOBAL_SUBSCRIPTION
from ups_server import logs
from ups_server.channel import channel
from ups_server.cursors import Cursors
from ups_server.fanout import Fanout
from ups_server.hotpath import TaskManagerApp
from ups_server.leases import LeaseWatcher
from ups_server import redisconn, responses
from ups_server.routes import healthz, service_url, workitem_routes
from ups_server.settings import ServerSettings
from ups_server.store import WorkitemStore
from ups_server.subscribe import SubscriptionService
from ups_server.subscription_routes import subscription_routes
from ups_server.subscriptions import Subscriptions
from ups_server.workitems import WorkitemService

schemas = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "aiw UPS-RS Task Manager", "version": "0.1.0"}})


def connect(settings: ServerSettings) -> tuple[Redis, str]:
    """A real Redis when a URL is configured, else the embedded in-process store
    (fakeredis with Lua), so ``aiw server`` runs on a bare machine."""
    if settings.redis_url:
        return redisconn.from_url(settings.redis_url), "redis"
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7,))), "embedded"


async def _forever(name: str, make, delay: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    """Run a background loop; if it ever fails, log and start it again."""
    while True:
        try:
            await make()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logs.log.error("background task failed; restarting", task=name, error=repr(exc))
            await asyncio.sleep(delay)


def create_app(settings: ServerSettings | None = None, redis: Redis | None = None) -> Starlette:
    settings = settings or ServerSettings()
    logs.configure(settings.log_json, settings.log_level, settings.log_file)
    if redis is None:
        redis, kind = connect(settings)
    else:
        kind = "redis"
    store = WorkitemStore(redis, settings.key_prefix, settings.events_maxlen)
    subs = Subscriptions(redis, settings.key_prefix)
    cursors = Cursors(redis, settings.key_prefix, int(settings.replay_max_age_seconds * 2), store.k_events)
    workitems = WorkitemService(store, settings, subs)
    fanout = Fanout(redis, store.k_events, subs, cursors,
                    confirm_after=settings.heartbeat_interval + settings.heartbeat_timeout + 1.0,
                    replay_max_events=settings.replay_max_events, replay_max_age=settings.replay_max_age_seconds,
                    queue_max=settings.connection_queue_max)

    async def purge_loop() -> None:
        while True:
            await asyncio.sleep(settings.purge_interval_seconds)
            purged = await workitems.purge()
            if purged:
                logs.log.info("purged", count=len(purged))

    leases = LeaseWatcher(workitems, settings.lease_seconds, settings.lease_max_attempts)

    async def lease_loop() -> None:
        await leases.run(interval=min(max(settings.lease_seconds / 10, 0.2), 10.0))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loops = [("purge", purge_loop), ("events", fanout.run), ("cursors", fanout.confirm_loop)]
        if settings.lease_seconds > 0:
            loops.append(("leases", lease_loop))
        tasks = [asyncio.create_task(_forever(n, f)) for n, f in loops]
        ups_schema.prepare()  # the compiled N-CREATE / N-SET schemas, before the first request
        # SCP Status Change: RESTARTED, subscriptions and workitems kept (WARM START)
        await store.append_events([(GLOBAL_SUBSCRIPTION, 0, ev.SCP_STATUS_CHANGE,
                                    dj.dumps(ev.scp_status_change("RESTARTED")), "*")])
        logs.log.info("started", store=kind, prefix=settings.path_prefix or "/")
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await redis.aclose()

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=request.app.routes))

    p = settings.path_prefix.rstrip("/")
    routes = workitem_routes(settings.path_prefix) + subscription_routes(settings.path_prefix) + [
        WebSocketRoute(f"{p}/subscribers/{{aet}}", channel),
        Route("/healthz", healthz, methods=["GET"], include_in_schema=True),
        Route("/openapi.json", openapi, include_in_schema=False),
    ]
    async def no_route(request: Request, exc: Exception) -> Response:
        """Paths and methods beside the UPS-RS routes: 404/405 with a Warning like every
        other refusal."""
        code = getattr(exc, "status_code", 404)
        text = (f"{request.method} is not a UPS-RS transaction on {request.url.path}" if code == 405
                else f"no UPS-RS resource at {request.url.path}")
        resp = Response(text + "\n", status_code=code, media_type="text/plain; charset=utf-8",
                        headers=getattr(exc, "headers", None))
        resp.headers.append("warning", responses.header_safe(f"299 {service_url(request)}: {text}"))
        return resp

    app = TaskManagerApp(routes=routes, lifespan=lifespan, middleware=[Middleware(logs.RequestLogMiddleware)],
                         exception_handlers={404: no_route, 405: no_route})
    app.workitems_path = f"{p}/workitems"  # the five hot routes, which are the first routes above
    app.state.settings = settings
    app.state.redis = redis
    app.state.store_kind = kind
    app.state.workitems = workitems
    app.state.subscriptions = SubscriptionService(workitems, subs, cursors)
    app.state.fanout = fanout
    app.state.leases = leases
    return app


async def going_down(app: Starlette) -> None:
    """SCP Status Change GOING DOWN to this replica's subscribers, before a clean shutdown."""
    await app.state.fanout.broadcast_local(ev.SCP_STATUS_CHANGE, ev.scp_status_change("GOING DOWN"))
