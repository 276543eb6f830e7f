"""Flower, always behind authentication: configured credentials, or generated ones locally."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from config import JobrunnerError, Settings

AUTH_FILE = "flower.auth"
LOCAL_USER = "admin"


@dataclass(frozen=True)
class Credentials:
    basic_auth: str  # "user:password"
    source: str  # where a person finds them

    @property
    def user(self) -> str:
        return self.basic_auth.split(":", 1)[0]


def configured_credentials(settings: Settings) -> Credentials | None:
    auth = settings.flower.basic_auth
    if not auth:
        return None
    if ":" not in auth or not all(auth.split(":", 1)):
        raise JobrunnerError("flower.basic_auth must look like user:password")
    return Credentials(auth, "JOBRUNNER_FLOWER__BASIC_AUTH / flower.basic_auth")


def local_credentials(settings: Settings) -> Credentials:
    """Configured credentials, else ones generated once and kept in <data_dir>/flower.auth."""
    configured = configured_credentials(settings)
    if configured:
        return configured
    path = settings.data_dir / AUTH_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{LOCAL_USER}:{secrets.token_urlsafe(18)}\n")
    return Credentials(path.read_text().strip(), f"generated, in {path}")


def url(settings: Settings) -> str:
    return f"http://{settings.flower.address}:{settings.flower.port}"


def flower_argv(settings: Settings) -> list[str]:
    """`celery -A worker.app flower` with our address, port and persistent state."""
    return [
        "-A",
        "worker.app",
        "flower",
        f"--address={settings.flower.address}",
        f"--port={settings.flower.port}",
        "--persistent=True",
        f"--db={(settings.data_dir / 'flower.db').resolve()}",
        "--state_save_interval=60000",
    ]


def flower_env(credentials: Credentials | None) -> dict[str, str]:
    """Credentials go through the environment, never the command line (visible in `ps`)."""
    return {"FLOWER_BASIC_AUTH": credentials.basic_auth} if credentials else {}
