"""The ``aiw`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(help="aiw: DICOM UPS-RS workflow manager for IHE AIW-I", no_args_is_help=True)
performer = typer.Typer(help="Task Performer: the agent that queues work and the workers that do it",
                        no_args_is_help=True)
app.add_typer(performer, name="performer")

from requester_cli.cli import app as request_app  # noqa: E402 - the actors' own command sets
from watcher.cli import watch  # noqa: E402

app.add_typer(request_app, name="request")
app.command("watch")(watch)


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", envvar="AIW_HOST", help="interface to listen on"),
    port: int = typer.Option(8080, envvar="AIW_PORT", help="TCP port"),
    redis_url: Optional[str] = typer.Option(None, envvar="AIW_REDIS_URL", help="Redis URL; none = embedded store"),
    path_prefix: str = typer.Option("", envvar="AIW_PATH_PREFIX", help="service root path, e.g. /dicom-web"),
    log_json: bool = typer.Option(True, envvar="AIW_LOG_JSON", help="JSON log lines"),
    dicomweb_root: Optional[Path] = typer.Option(None, "--dicomweb-root", envvar="AIW_DICOMWEB_ROOT",
                                                 help="also serve the built-in DICOMweb store from this "
                                                      "directory at /dicom-web"),
) -> None:
    """Run the UPS-RS Task Manager (and, with --dicomweb-root, a small DICOMweb store)."""
    import uvicorn

    from aiw.compose import create_site
    from ups_server.app import going_down
    from ups_server.gctune import tune_for_serving
    from ups_server.memtrim import keep_heap
    from ups_server.settings import ServerSettings

    settings = ServerSettings(host=host, port=port, redis_url=redis_url, path_prefix=path_prefix, log_json=log_json)
    app_ = create_site(settings, dicomweb_root)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):  # type: ignore[no-untyped-def]
            await super().startup(sockets)
            tune_for_serving()  # what exists now lives as long as the process
            keep_heap()  # no heap shrinking and regrowing with every large reply

        async def shutdown(self, sockets=None):  # type: ignore[no-untyped-def]
            # tell subscribers before uvicorn closes their channels
            await going_down(app_)
            await super().shutdown(sockets)

    config = uvicorn.Config(app_, host=host, port=port, log_level="warning", access_log=False,
                            ws="websockets-sansio", ws_ping_interval=settings.heartbeat_interval,
                            ws_ping_timeout=settings.heartbeat_timeout, ws_per_message_deflate=False)
    Server(config).run()


@app.command()
def demo(
    pacs: Optional[str] = typer.Option(None, "--pacs", help="DICOMweb service root of a real PACS (default: "
                                                            "a built-in store)"),
    redis_url: Optional[str] = typer.Option(None, "--redis-url", help="Redis to use (default: a private "
                                                                      "redis-server, or the embedded store)"),
    size: str = typer.Option("full", "--size", help="full = 256x256x160 series; small = 128x128x64"),
    seed: int = typer.Option(7, "--seed", help="seed of the generated studies"),
    keep_running: bool = typer.Option(False, "--keep-running", help="leave the services up afterwards"),
    embedded: bool = typer.Option(False, "--embedded", help="use the embedded store even if redis-server is "
                                                            "installed"),
) -> None:
    """The whole AIW-I loop on this machine: Task Manager, DICOMweb store, performer agent
    and worker; a generated study with a prior; one workitem followed to its SEG + SR."""
    from aiw.demo import Options, run

    raise typer.Exit(run(Options(pacs=pacs, redis_url=redis_url, size=size, seed=seed, keep_running=keep_running,
                           embedded=embedded)))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def conformance(
    ctx: typer.Context,
    url: str = typer.Option(..., "--url", help="UPS-RS service root (the URL before /workitems)"),
) -> None:
    """Run the portable UPS-RS conformance suite against any server; further arguments
    go to pytest (e.g. -q -k search)."""
    from conformance.runner import run

    raise typer.Exit(run(url, list(ctx.args)))


def _performer_settings(**given: Any) -> Any:
    """Environment (AIW_*) first, then the flags actually given."""
    from performers.settings import PerformerSettings

    return PerformerSettings(**{k: v for k, v in given.items() if v not in (None, [], ())})


UPS_URL = typer.Option(None, "--ups-url", help="Task Manager service root [env AIW_UPS_URL]")
QUEUE_URL = typer.Option(None, "--queue-url", help="Redis URL of the job queues [env AIW_QUEUE_URL]")


@performer.command("agent")
def performer_agent(
    ups_url: Optional[str] = UPS_URL,
    queue_url: Optional[str] = QUEUE_URL,
    ae_title: Optional[str] = typer.Option(None, "--ae-title", help="subscriber AE title [env AIW_AE_TITLE]"),
    model: list[str] = typer.Option([], "--model", help="model to serve (repeatable) [env AIW_MODELS]"),
    external_models: Optional[Path] = typer.Option(None, "--external-models", help="YAML of external models"),
    worklist_label: Optional[str] = typer.Option(None, "--worklist-label", help="serve only this Worklist Label"),
) -> None:
    """Subscribe to the worklist and queue one job per eligible workitem."""
    import asyncio
    import signal

    from performers.agent import Agent

    settings = _performer_settings(ups_url=ups_url, queue_url=queue_url, ae_title=ae_title, models=model,
                                   external_models=external_models, worklist_label=worklist_label)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Agent(settings).run(stop)

    asyncio.run(main())


@performer.command("worker")
def performer_worker(
    ups_url: Optional[str] = UPS_URL,
    queue_url: Optional[str] = QUEUE_URL,
    stow_url: Optional[str] = typer.Option(None, "--stow-url", help="default STOW-RS URL [env AIW_STOW_URL]"),
    burst: bool = typer.Option(False, "--burst", help="stop when the queues are empty"),
    name: Optional[str] = typer.Option(None, "--name", help="worker name (default: host and pid)"),
) -> None:
    """Run jobs: claim, retrieve, infer, store SEG + SR, complete."""
    import os

    from performers.worker import run_worker

    settings = _performer_settings(ups_url=ups_url, queue_url=queue_url, stow_url=stow_url)
    # the job reads its settings from the environment (it may run in a forked work horse)
    for key, value in (("AIW_UPS_URL", ups_url), ("AIW_QUEUE_URL", queue_url), ("AIW_STOW_URL", stow_url)):
        if value:
            os.environ[key] = value
    run_worker(settings, burst=burst, name=name)


if __name__ == "__main__":
    app()
