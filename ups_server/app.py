"""The Task Manager application: Starlette routes over the Redis workitem store."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.schemas import SchemaGenerator

from ups_server import logs
from ups_server.routes import healthz, workitem_routes
from ups_server.settings import ServerSettings
from ups_server.store import WorkitemStore
from ups_server.workitems import WorkitemService

schemas = SchemaGenerator({"openapi": "3.0.0", "info": {"title": "aiw UPS-RS Task Manager", "version": "0.1.0"}})


def connect(settings: ServerSettings) -> tuple[Redis, str]:
    """A real Redis when a URL is configured, else the embedded in-process store
    (fakeredis with Lua), so ``aiw server`` runs on a bare machine."""
    if settings.redis_url:
        return Redis.from_url(settings.redis_url), "redis"
    import fakeredis

    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7,))), "embedded"


def create_app(settings: ServerSettings | None = None, redis: Redis | None = None) -> Starlette:
    settings = settings or ServerSettings()
    logs.configure(settings.log_json, settings.log_level)
    if redis is None:
        redis, kind = connect(settings)
    else:
        kind = "redis"
    store = WorkitemStore(redis, settings.key_prefix, settings.events_maxlen)
    service = WorkitemService(store, settings)

    async def purge_loop() -> None:
        while True:
            await asyncio.sleep(settings.purge_interval_seconds)
            try:
                purged = await service.purge()
                if purged:
                    logs.log.info("purged", count=len(purged))
            except Exception as exc:  # keep purging on the next tick; never kill the server
                logs.log.warning("purge failed", error=str(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(purge_loop())
        logs.log.info("started", store=kind, prefix=settings.path_prefix or "/")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await redis.aclose()

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=request.app.routes))

    routes = workitem_routes(settings.path_prefix) + [
        Route("/healthz", healthz, methods=["GET"], include_in_schema=True),
        Route("/openapi.json", openapi, include_in_schema=False),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(logs.RequestLogMiddleware)])
    app.state.settings = settings
    app.state.redis = redis
    app.state.store_kind = kind
    app.state.workitems = service
    return app
