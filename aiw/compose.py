"""One ASGI app for one port: the Task Manager, and optionally the built-in DICOMweb
store under ``/dicom-web`` (``aiw server --dicomweb-root``, ``aiw demo``).

The store is mounted into the Task Manager's router rather than both into a new app,
because Starlette runs only the outer app's lifespan, and the Task Manager's lifespan
runs its event fan-out and leases.
"""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import Mount

from ups_server.app import create_app
from ups_server.dicomweb import create_dicomweb_app
from ups_server.settings import ServerSettings

DICOMWEB_PATH = "/dicom-web"


def create_site(settings: ServerSettings, dicomweb_root: Path | None = None, *,
                redis: Redis | None = None) -> Starlette:
    app = create_app(settings, redis=redis)
    if dicomweb_root is not None:
        if settings.path_prefix.rstrip("/") == DICOMWEB_PATH:
            raise ValueError(f"the UPS-RS path prefix {settings.path_prefix!r} would be hidden by the "
                             f"DICOMweb store at {DICOMWEB_PATH}; choose another prefix")
        public = f"{settings.public_url.rstrip('/')}{DICOMWEB_PATH}" if settings.public_url else None
        dicomweb_root.mkdir(parents=True, exist_ok=True)
        app.router.routes.append(Mount(DICOMWEB_PATH, app=create_dicomweb_app(dicomweb_root, public_url=public)))
    return app
