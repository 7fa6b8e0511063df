"""Running the watcher: the sync loop plus one console (web server or terminal).

Both consoles share one event loop with the sync loop, so a page or the terminal always
shows the model as it is, with no copy and no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from rich.console import Console as RichConsole
from rich.live import Live

from watcher.config import WatchSettings
from watcher.model import Model
from watcher.sync import Watcher


async def run_web(settings: WatchSettings, stop: asyncio.Event | None = None, *, install_signals: bool = True) -> None:
    import uvicorn

    from watcher.web import Console

    stop = stop or asyncio.Event()
    watcher = Watcher(settings, Model())
    console = Console(watcher, settings)
    config = uvicorn.Config(console.app(), host=settings.host, port=settings.port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if not install_signals:
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    tasks = [asyncio.create_task(watcher.run(stop)), asyncio.create_task(console.publisher.run())]
    serving = asyncio.create_task(server.serve())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await serving
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stopping.cancel()


async def run_terminal(settings: WatchSettings, stop: asyncio.Event | None = None,
                       console: RichConsole | None = None, refresh: float = 0.5, watcher: Watcher | None = None) -> None:
    from watcher.terminal import render

    stop = stop or asyncio.Event()
    watcher = watcher or Watcher(settings, Model())
    task = asyncio.create_task(watcher.run(stop))
    console = console or RichConsole()
    # log lines would tear the live table apart: only warnings, and above the table
    logging.getLogger("upsrs.events").setLevel(logging.WARNING)
    try:
        with Live(render(watcher.model, watcher.status, settings), console=console, auto_refresh=False,
                  screen=False, transient=False) as live:
            while not stop.is_set():
                live.update(render(watcher.model, watcher.status, settings), refresh=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), refresh)
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
