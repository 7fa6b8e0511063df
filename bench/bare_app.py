"""The ceiling: a bare Starlette app whose one endpoint does one Redis GET and one SET.

Served exactly as ``aiw server`` serves the Task Manager (``aiw/cli.py``): ``uvicorn.run``
with one worker and uvicorn's default ("auto") loop and HTTP implementations, so uvloop
and httptools when installed; redis.asyncio with hiredis as the parser. No logging, no
middleware: what is left is the framework, the server and one Redis round trip each way.

    python -m bench.bare_app --port 8099 --redis-url redis://127.0.0.1:6380/0
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "bare:counter"


def create_app(redis_url: str) -> Starlette:
    redis = Redis.from_url(redis_url)

    async def bare(request: Request) -> Response:
        value = await redis.get(KEY)
        await redis.set(KEY, b"x" * 64 if value is None else value)
        return JSONResponse({"ok": True, "len": len(value or b"")})

    async def healthz(request: Request) -> Response:
        await redis.ping()
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await redis.aclose()

    return Starlette(routes=[Route("/bare", bare), Route("/healthz", healthz)], lifespan=lifespan)


def main() -> None:
    import uvicorn
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE, "install hiredis: the bare endpoint must use the same parser as aiw"
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis-url", required=True)
    a = ap.parse_args()
    uvicorn.run(create_app(a.redis_url), host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
