"""The web console: pages, a JSON API, and the live stream — served by the watcher itself.

Plain HTML, one small hand-written script per page and inline SVG charts: nothing to
build, nothing fetched from the internet (hospital networks often reach only the Task
Manager). The page keeps the rows it was sent and applies pushed changes; filtering and
sorting happen in the browser, so a filter change costs no round trip.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path
from string import Formatter
from typing import Any, AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from upsrs.client import UpsError

from watcher.attention import attention
from watcher.charts import stats_html
from watcher.config import ALL_COLUMNS, WatchSettings
from watcher.push import Publisher, sse
from watcher.stats import statistics
from watcher.sync import Watcher

STATIC = Path(__file__).parent / "static"
KEEPALIVE = 15.0


def viewer_url(template: str, row: dict[str, Any]) -> str:
    """The IID-style viewer link for a workitem's results (their study, else the input
    study); empty when no template is configured or a placeholder has no value."""
    if not template:
        return ""
    outputs = row.get("outputs") or []
    values = {"study_uid": (outputs[0]["study_uid"] if outputs and outputs[0].get("study_uid") else row.get("study_uid", "")),
              "series_uid": outputs[0]["series_uid"] if outputs else "", "accession": row.get("accession", ""),
              "patient_id": row.get("patient_id", ""), "workitem_uid": row.get("uid", "")}
    names = {n for _, n, _, _ in Formatter().parse(template) if n}
    if any(not values.get(n) for n in names):
        return ""
    from urllib.parse import quote

    return template.format(**{k: quote(str(v), safe="") for k, v in values.items()})


class Console:
    def __init__(self, watcher: Watcher, settings: WatchSettings):
        self.watcher = watcher
        self.model = watcher.model
        self.settings = settings
        self.publisher = Publisher(self.model, self.status, self.attention, settings.push_interval)

    def status(self) -> dict[str, Any]:
        return {**self.watcher.status.to_json(), "rows": len(self.model.rows), "counts": self.model.counts(),
                "skipped": self.model.skipped}

    def attention(self) -> dict[str, Any]:
        return attention(self.model, self.settings, time.time())

    def config(self) -> dict[str, Any]:
        return {"columns": [c for c in self.settings.columns if c in ALL_COLUMNS], "all_columns": ALL_COLUMNS,
                "server": self.settings.server, "cancel_enabled": bool(self.settings.cancel_tokens),
                "stuck_minutes": self.settings.stuck_minutes}

    # ------------------------------------------------------------------ pages
    async def page(self, request: Request) -> Response:
        name = request.scope["route"].name
        return FileResponse(STATIC / f"{name}.html", headers={"cache-control": "no-cache"})

    # ------------------------------------------------------------------ API
    async def rows(self, request: Request) -> Response:
        return Response(self.publisher.snapshot({"config": self.config()}), media_type="application/json")

    async def workitem(self, request: Request) -> Response:
        row = self.model.rows.get(request.path_params["uid"])
        if row is None:
            return JSONResponse({"error": "no such workitem in the watcher's model"}, status_code=404)
        return Response(orjson.dumps(self.detail(row.detail_json())), media_type="application/json")

    def detail(self, d: dict[str, Any]) -> dict[str, Any]:
        d["viewer_url"] = viewer_url(self.settings.viewer_url_template, d)
        d["cancel_enabled"] = bool(self.settings.cancel_tokens)
        return d

    async def attention_api(self, request: Request) -> Response:
        return Response(orjson.dumps(self.attention()), media_type="application/json")

    async def stats_api(self, request: Request) -> Response:
        return Response(orjson.dumps(statistics(self.model, time.time())), media_type="application/json")

    async def stats_fragment(self, request: Request) -> Response:
        return HTMLResponse(stats_html(statistics(self.model, time.time())), headers={"cache-control": "no-store"})

    async def status_api(self, request: Request) -> Response:
        return JSONResponse(self.status())

    async def cancel(self, request: Request) -> Response:
        """A cancellation request (RAD-88) on behalf of a person holding a configured token."""
        if not self.settings.cancel_tokens:
            return JSONResponse({"error": "cancellation requests are not enabled on this watcher"}, status_code=403)
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        user = next((u for t, u in self.settings.cancel_tokens.items() if token and hmac.compare_digest(t, token)), None)
        if user is None:
            return JSONResponse({"error": "not allowed: a valid cancel token is required"}, status_code=403)
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return JSONResponse({"error": "the body must be JSON: {\"reason\": ...}"}, status_code=400)
        reason = str(body.get("reason", "")).strip() if isinstance(body, dict) else ""
        if not reason:
            return JSONResponse({"error": "a reason is required"}, status_code=400)
        uid = request.path_params["uid"]
        try:
            await self.watcher.request_cancel(uid, reason[:10240], user)
        except UpsError as exc:
            return JSONResponse({"error": exc.warning or str(exc), "status": exc.status}, status_code=409
                                if exc.status in (400, 409) else exc.status if exc.status < 500 else 502)
        return JSONResponse({"requested": True, "by": user, "reason": reason}, status_code=202)

    # ------------------------------------------------------------------ live stream
    async def stream(self, request: Request) -> Response:
        uid = request.query_params.get("uid") or None
        page = self.publisher.open(uid)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"
                if uid is None:
                    yield sse("snapshot", self.publisher.snapshot({"config": self.config(),
                                                                  "attention": self.attention()}))
                else:
                    row = self.model.rows.get(uid)
                    yield sse("detail", orjson.dumps({"row": self.detail(row.detail_json()) if row else None,
                                                      "status": self.status()}))
                while not page.dropped:
                    try:
                        event, data = await asyncio.wait_for(page.queue.get(), KEEPALIVE)
                    except asyncio.TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    if event == "detail":
                        doc = orjson.loads(data)
                        if doc.get("row"):
                            doc["row"] = self.detail(doc["row"])
                        data = orjson.dumps(doc)
                    yield sse(event, data)
            finally:
                self.publisher.close(page)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    def app(self) -> Starlette:
        routes = [
            Route("/", self.page, name="index"),
            Route("/workitems/{uid}", self.page, name="workitem"),
            Route("/stats", self.page, name="stats"),
            Route("/api/rows", self.rows),
            Route("/api/stream", self.stream),
            Route("/api/status", self.status_api),
            Route("/api/attention", self.attention_api),
            Route("/api/stats", self.stats_api),
            Route("/api/stats.html", self.stats_fragment),
            Route("/api/workitems/{uid}", self.workitem),
            Route("/api/workitems/{uid}/cancel", self.cancel, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(routes=routes)
