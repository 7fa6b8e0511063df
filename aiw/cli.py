"""The ``aiw`` command."""

from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(help="aiw: DICOM UPS-RS workflow manager for IHE AIW-I", no_args_is_help=True)


@app.command()
def server(
    host: str = typer.Option("127.0.0.1", envvar="AIW_HOST", help="interface to listen on"),
    port: int = typer.Option(8080, envvar="AIW_PORT", help="TCP port"),
    redis_url: Optional[str] = typer.Option(None, envvar="AIW_REDIS_URL", help="Redis URL; none = embedded store"),
    path_prefix: str = typer.Option("", envvar="AIW_PATH_PREFIX", help="service root path, e.g. /dicom-web"),
    log_json: bool = typer.Option(True, envvar="AIW_LOG_JSON", help="JSON log lines"),
) -> None:
    """Run the UPS-RS Task Manager."""
    import uvicorn

    from ups_server.app import create_app
    from ups_server.settings import ServerSettings

    from ups_server.app import going_down

    settings = ServerSettings(host=host, port=port, redis_url=redis_url, path_prefix=path_prefix, log_json=log_json)
    app_ = create_app(settings)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None):  # type: ignore[no-untyped-def]
            # tell subscribers before uvicorn closes their channels
            await going_down(app_)
            await super().shutdown(sockets)

    config = uvicorn.Config(app_, host=host, port=port, log_level="warning", access_log=False,
                            ws="websockets-sansio", ws_ping_interval=settings.heartbeat_interval,
                            ws_ping_timeout=settings.heartbeat_timeout, ws_per_message_deflate=False)
    Server(config).run()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def conformance(
    ctx: typer.Context,
    url: str = typer.Option(..., "--url", help="UPS-RS service root (the URL before /workitems)"),
) -> None:
    """Run the portable UPS-RS conformance suite against any server; further arguments
    go to pytest (e.g. -q -k search)."""
    from conformance.runner import run

    raise typer.Exit(run(url, list(ctx.args)))


if __name__ == "__main__":
    app()
