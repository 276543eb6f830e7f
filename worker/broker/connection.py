"""Which Redis to use, whether it answers, and clients for it.

With no broker_url configured, the URL of the embedded Redis that `jobrunner up` started is read
from <data_dir>/broker.url, so `jobrunner submit` in another terminal finds the running stack.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from jobrunner.config import JobrunnerError, Settings

BROKER_URL_FILE = "broker.url"


class BrokerError(JobrunnerError):
    """The broker is not configured, not reachable, or refused us."""


def broker_url_file(settings: Settings) -> Path:
    return settings.data_dir / BROKER_URL_FILE


def resolve(settings: Settings) -> Settings:
    """`settings` with broker_url filled in from the running embedded Redis, if it has none."""
    if settings.broker_url:
        return settings
    path = broker_url_file(settings)
    if path.is_file():
        return settings.model_copy(update={"broker_url": path.read_text().strip()})
    return settings


def redact(url: str) -> str:
    """The URL without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


RESTART_RETRIES = 12  # exponential backoff capped at 2 s: rides out ~15 s of broker restart


def client(url: str, *, patient: bool = True) -> redis.Redis:
    """A client for jobrunner's records. No read timeout: blocking waits carry their own
    (redis-py 8 otherwise cuts blocking reads after 5 s, see shared FINDINGS). A patient client
    retries a lost connection with backoff, so a broker restart is a pause, not an error; an
    impatient one (reachability checks, start-up polls) fails at once."""
    retries = RESTART_RETRIES if patient else 0
    return redis.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=5,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def require_url(settings: Settings) -> str:
    if not settings.broker_url:
        raise BrokerError(
            "no broker: set JOBRUNNER_BROKER_URL, or start the local stack with `jobrunner up`"
        )
    return settings.broker_url


def check_reachable(settings: Settings) -> None:
    """Ping the broker, or raise one line saying why it cannot be used."""
    url = require_url(settings)
    try:
        client(url, patient=False).ping()
    except redis.AuthenticationError:
        raise BrokerError(f"broker {redact(url)} refused our password") from None
    except redis.ResponseError as error:
        if "NOAUTH" in str(error):
            raise BrokerError(f"broker {redact(url)} needs a password in its URL") from None
        raise BrokerError(f"broker {redact(url)}: {error}") from None
    except (redis.ConnectionError, redis.TimeoutError, ValueError) as error:
        hint = " (is `jobrunner up` still running?)" if _from_embedded(settings) else ""
        raise BrokerError(f"cannot reach broker {redact(url)}: {error}{hint}") from None


def _from_embedded(settings: Settings) -> bool:
    path = broker_url_file(settings)
    return path.is_file() and path.read_text().strip() == settings.broker_url
