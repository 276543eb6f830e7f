"""Serve the API with uvicorn: HTTPS when `api.tls_certfile`/`tls_keyfile` are set."""

from __future__ import annotations

import uvicorn

from jobrunner.config import Settings
from jobrunner.worker.api.app import create_api


def url(settings: Settings) -> str:
    scheme = "https" if settings.api.tls_certfile else "http"
    return f"{scheme}://{settings.api.address}:{settings.api.port}"


def serve(settings: Settings) -> None:
    """Run until stopped (SIGTERM/SIGINT: uvicorn finishes open requests first)."""
    uvicorn.run(
        create_api(settings),
        host=settings.api.address,
        port=settings.api.port,
        ssl_certfile=settings.api.tls_certfile or None,
        ssl_keyfile=settings.api.tls_keyfile or None,
        log_level="warning",
        # Behind a proxy, the audit trail's "where" should be the client, not the proxy: run it
        # with FORWARDED_ALLOW_IPS naming the proxy (uvicorn's own setting).
        proxy_headers=True,
    )
