"""Flower, always behind authentication: configured basic auth or OAuth, or generated basic-auth
credentials locally. The exporter (worker/monitoring/metrics.py) guards its port the same way."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from jobrunner.config import JobrunnerError, Settings
from jobrunner.config.settings import FlowerSettings

AUTH_FILE = "flower.auth"
LOCAL_USER = "admin"
# Flower reads each of its options from a FLOWER_<NAME> variable; these are the OAuth ones.
OAUTH_OPTIONS = ("auth_provider", "auth", "oauth2_key", "oauth2_secret", "oauth2_redirect_uri")


@dataclass(frozen=True)
class Credentials:
    basic_auth: str  # "user:password"; empty when only OAuth is configured
    source: str  # where a person finds them
    oauth: dict[str, str] = field(default_factory=dict)  # Flower option -> value

    @property
    def user(self) -> str:
        return self.basic_auth.split(":", 1)[0] if self.basic_auth else "(OAuth)"


def parse_basic_auth(auth: str, key: str) -> str:
    """`auth` if it looks like user:password, else a one-line error naming the setting."""
    if ":" not in auth or not all(auth.split(":", 1)):
        raise JobrunnerError(f"{key} must look like user:password")
    return auth


def _oauth(config: FlowerSettings) -> dict[str, str]:
    """The OAuth options set; an error if some are set but not enough to log anyone in."""
    options = {name: getattr(config, name) for name in OAUTH_OPTIONS if getattr(config, name)}
    if options and not {"auth_provider", "auth", "oauth2_key", "oauth2_secret"} <= set(options):
        raise JobrunnerError(
            "flower OAuth needs auth_provider, auth, oauth2_key and oauth2_secret together"
        )
    return options


def configured_credentials(settings: Settings) -> Credentials | None:
    config = settings.flower
    oauth = _oauth(config)
    if not config.basic_auth and not oauth:
        return None
    basic = parse_basic_auth(config.basic_auth, "flower.basic_auth") if config.basic_auth else ""
    return Credentials(basic, "JOBRUNNER_FLOWER__* / [flower]", oauth)


def generated(path: Path) -> str:
    """`user:password` kept in `path` (mode 0600), generated on first use."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process generated it meanwhile
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{LOCAL_USER}:{secrets.token_urlsafe(18)}\n")
    return path.read_text().strip()


def local_credentials(settings: Settings) -> Credentials:
    """Configured credentials, else ones generated once and kept in <data_dir>/flower.auth."""
    configured = configured_credentials(settings)
    if configured:
        return configured
    path = settings.data_dir / AUTH_FILE
    return Credentials(generated(path), f"generated, in {path}")


def url(settings: Settings) -> str:
    return f"http://{settings.flower.address}:{settings.flower.port}"


def flower_argv(settings: Settings) -> list[str]:
    """`celery -A jobrunner.worker.monitoring.flower_app flower` (see there why not the plain
    app) with our address, port and persistent state (in the data dir, saved every minute and
    on shutdown, so a restart keeps the task history)."""
    return [
        "-A",
        "jobrunner.worker.monitoring.flower_app",
        "flower",
        f"--address={settings.flower.address}",
        f"--port={settings.flower.port}",
        "--persistent=True",
        f"--db={(settings.data_dir / 'flower.db').resolve()}",
        "--state_save_interval=60000",
    ]


def flower_env(credentials: Credentials | None) -> dict[str, str]:
    """Credentials go through the environment, never the command line (visible in `ps`)."""
    if credentials is None:
        return {}
    env = {f"FLOWER_{name.upper()}": value for name, value in credentials.oauth.items()}
    if credentials.basic_auth:
        env["FLOWER_BASIC_AUTH"] = credentials.basic_auth
    return env
