"""``aiw watch``: the Watcher — a live console of every AI workitem, web or terminal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Optional

import typer


def watch(
    server: Optional[str] = typer.Option(None, "--server", envvar="AIW_WATCH_SERVER",
                                         help="Task Manager service root (the URL before /workitems)"),
    web: bool = typer.Option(False, "--web", help="serve the web console instead of the terminal table"),
    port: Optional[int] = typer.Option(None, "--port", help="web console port (default 8090)"),
    host: Optional[str] = typer.Option(None, "--host", help="web console interface (default 127.0.0.1)"),
    ae_title: Optional[str] = typer.Option(None, "--ae-title", help="the watcher's AE title (default AIW_WATCHER)"),
    viewer_url: Optional[str] = typer.Option(None, "--viewer-url",
                                             help="viewer URL template, e.g. http://ohif/viewer?StudyInstanceUIDs={study_uid}"),
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False,
                                          help="TOML settings (columns, time budgets, cancel tokens, ...)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log connection details"),
) -> None:
    """Follow every workitem live: global subscription with deletion lock, a live model,
    and a web (--web) or terminal console."""
    from watcher import config as cfg
    from watcher.service import run_terminal, run_web

    logging.basicConfig(level=logging.INFO if verbose or web else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.INFO if verbose else logging.WARNING)
    settings = cfg.load(config, server=server, port=port, host=host, ae_title=ae_title, viewer_url_template=viewer_url)
    if web:
        typer.echo(f"aiw watch: web console on http://{settings.host}:{settings.port}/ "
                   f"following {settings.server} as {settings.ae_title}")
    try:
        asyncio.run(run_web(settings) if web else run_terminal(settings))
    except KeyboardInterrupt:
        pass
