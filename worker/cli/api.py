"""`jobrunner api`: the HTTP API (see docs/api.md)."""

from __future__ import annotations

from jobrunner.config import get_settings
from jobrunner.worker.cli.base import cli, console


@cli.command("api")
def api_command() -> None:
    """Serve the HTTP API on the configured address and port (HTTPS with api.tls_certfile and
    api.tls_keyfile). Every route needs a token from `jobrunner tokens create`."""
    from jobrunner.worker.api import serve
    from jobrunner.worker.broker import connection

    settings = connection.resolve(get_settings())
    connection.check_reachable(settings)
    console.print(f"api: {serve.url(settings)} (bearer tokens: `jobrunner tokens create`)")
    serve.serve(settings)
