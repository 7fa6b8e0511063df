"""The five hot UPS-RS routes served without Starlette's middleware stack and router.

Create, retrieve, update, change state and search are nearly every request a Task Manager
answers. Through Starlette each one passes the server-error middleware, the log
middleware's send wrapper, the exception middleware (twice: around the router and around
the endpoint) and a router that tries the routes in order with a regular expression each:
about as much CPU as a retrieve's own work. ``TaskManagerApp`` recognises these five by
a string comparison, calls the same endpoint functions (``ups_server.routes``) with the
same ``Request``, and does what the stack would have done with the result:

- the request id and the one log line per request (``logs.begin`` / ``logs.finish``, the
  functions the log middleware uses), and the ``X-Request-Id`` reply header;
- an exception the endpoint lets out is logged with status 500, answered with Starlette's
  own ``Internal Server Error`` (when no reply was started) and raised on to the server,
  as ``ServerErrorMiddleware`` does.

Anything else — other methods (HEAD included), paths or routes, WebSockets, lifespan, and
any path that is not exactly one of the five shapes — goes through Starlette unchanged.
The endpoints raise no ``HTTPException``, so the exception middleware had nothing to do
for them. A request is only taken here when Starlette's router would pick the same
endpoint: these five are the first routes of the app, in this order, and a route
parameter (``{uid}``) is one non-empty path segment in both.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from ups_server import logs, memtrim
from ups_server.routes import change_state, create_workitem, retrieve_workitem, search_workitems, update_workitem

Endpoint = Callable[[Request], Awaitable[Response]]


def hot_route(path: str, method: str, base: str) -> tuple[Endpoint, dict[str, str]] | None:
    """The endpoint and path parameters of a request to one of the five hot routes under
    ``base`` (``{prefix}/workitems``), or None: let Starlette route it."""
    if not path.startswith(base):
        return None
    rest = path[len(base):]
    if not rest:
        if method == "POST":
            return create_workitem, {}
        if method == "GET":
            return search_workitems, {}
        return None
    if rest[0] != "/":
        return None
    uid, slash, tail = rest[1:].partition("/")
    if not uid:
        return None
    if not slash:
        if method == "GET":
            return retrieve_workitem, {"uid": uid}
        if method == "POST":
            return update_workitem, {"uid": uid}
    elif tail == "state" and method == "PUT":
        return change_state, {"uid": uid}
    return None


class TaskManagerApp(Starlette):
    """The Task Manager's Starlette app, answering the five hot routes itself (see the
    module's docstring); ``workitems`` is the routes' path (``{prefix}/workitems``)."""

    workitems_path: str = "/workitems"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = hot_route(get_route_path(scope), scope["method"], self.workitems_path)
            if found is not None:
                scope["app"] = self
                scope["path_params"] = found[1]
                await self._serve(found[0], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _serve(endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        rid = logs.begin(scope)
        start = time.perf_counter()
        status = 500
        started = False
        try:
            try:
                response = await endpoint(Request(scope, receive, send))
                status = response.status_code
                headers = response.raw_headers
                headers.append((b"x-request-id", rid.encode()))
                started = True
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": response.body})
                memtrim.trimmer.note(len(response.body))  # a large search reply: hand its heap back
            finally:
                logs.finish(scope, rid, status, start)
        except Exception:
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
