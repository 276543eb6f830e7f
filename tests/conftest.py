"""Fixtures that start real servers: a redis-server (the embedded binary) and Celery workers
started the way production starts them (`jobrunner worker --pool NAME`). Each is stopped at the
end of its scope, and each test starts with empty tier queues."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from jobrunner.config import TIERS, get_settings
from jobrunner.worker.app import create_app
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.embedded import EmbeddedRedis
from jobrunner.worker.broker.keys import wake_key
from jobrunner.worker.client import Client
from tests.support import processes
from tests.support.steps import STARTS

pytest_plugins = [
    "tests.fixtures.api",
    "tests.fixtures.capped_redis",
    "tests.fixtures.fleet",
    "tests.fixtures.otlp",
    "tests.fixtures.prometheus",
    "tests.fixtures.s3",
    "tests.fixtures.scheduler",
]

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def stack_env(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for this process and the workers: our Redis, a temp data dir, test steps."""
    env = {
        "JOBRUNNER_BROKER_URL": redis_url,
        "JOBRUNNER_DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "JOBRUNNER_IMPORTS": "tests.support.steps",
        "PYTHONPATH": str(ROOT),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture
def redis_client(stack_env: dict[str, str]) -> Iterator[redis.Redis]:
    """A client on the test Redis; the tier queues (and their wake tokens) and the start log are
    emptied first."""
    client = redis.Redis.from_url(stack_env["JOBRUNNER_BROKER_URL"])
    settings = get_settings()
    queues = [settings.queue(tier) for tier in TIERS]
    client.delete(STARTS, *queues, *map(wake_key, queues))
    yield client
    client.close()


@pytest.fixture
def client(stack_env: dict[str, str]) -> Client:
    return Client()


@pytest.fixture(scope="session")
def app(stack_env: dict[str, str]) -> Celery:
    """An app on the test broker, built by the factory, for pings and inspections."""
    return create_app(connection.resolve(get_settings()), set_as_current=False)


class Workers:
    """Starts `jobrunner worker` processes and stops them all at the end of the scope."""

    def __init__(self, app: Celery, env: dict[str, str], log_dir: Path) -> None:
        self.app = app
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, pool: str, node: str, *, cwd: Path = ROOT, **env: str
    ) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{node}.log", "wb")  # noqa: SIM115 - the process owns it
        process = subprocess.Popen(
            [sys.executable, "-m", "jobrunner", "worker", "--pool", pool, "--node-name", node],
            env={**os.environ, **self.env, **env},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (self.log_dir / f"{node}.log").read_text()[-2000:]
                raise RuntimeError(f"worker {node} exited with {process.returncode}:\n{tail}")
            try:
                if self.app.control.ping(destination=[node], timeout=0.5):
                    return process
            except (redis.ConnectionError, OSError):
                # A pooled connection from before a broker restart: the next try reconnects.
                time.sleep(0.1)
        raise RuntimeError(f"worker {node} did not answer a ping in {WORKER_START_TIMEOUT_S} s")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


@pytest.fixture(scope="module")
def workers(
    app: Celery, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    started = Workers(app, stack_env, tmp_path_factory.mktemp("worker-logs"))
    yield started
    started.stop_all()


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """A jobrunner server process (`python -m jobrunner ARGS`: Flower, the metrics exporter) on a
    free 127.0.0.1 port behind generated basic auth; stopped (its whole session) at the end."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        log: Path,
        ready_path: str,
        ready_status: int = 200,
    ) -> None:
        from jobrunner.worker.broker.embedded import free_port

        self.port = free_port()
        self.user, self.password = "tester", secrets.token_urlsafe(12)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            k: v.replace("{port}", str(self.port)).replace("{auth}", self.auth)
            for k, v in env.items()
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobrunner", *args],
            env={**os.environ, **self.env},
            cwd=ROOT,
            stdout=open(log, "wb"),  # noqa: SIM115 - the process owns it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{args[0]} exited:\n{log.read_text()[-2000:]}")
            try:
                if self.get(ready_path).status == ready_status:
                    return
            except OSError:  # not listening yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{args[0]} did not answer in {WORKER_START_TIMEOUT_S} s")

    @property
    def auth(self) -> str:
        return f"{self.user}:{self.password}"

    def request(self, path: str, data: object = None, *, auth: bool = True) -> Reply:
        """GET (or with `data`, POST it as JSON) `path`; any HTTP status is a Reply."""
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Basic " + b64encode(self.auth.encode()).decode()
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(self.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return Reply(reply.status, reply.read())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.read())

    def get(self, path: str, *, auth: bool = True) -> Reply:
        return self.request(path, auth=auth)

    def stop(self) -> None:
        processes.stop(self.process)


@pytest.fixture(scope="module")
def flower_server(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`jobrunner flower` on a free port with basic auth, its state in a fresh data dir."""
    env = {
        "JOBRUNNER_FLOWER__PORT": "{port}",
        "JOBRUNNER_FLOWER__BASIC_AUTH": "{auth}",
        "JOBRUNNER_DATA_DIR": str(tmp_path_factory.mktemp("flower-data")),
    }
    server = Server(
        ["flower"], env, tmp_path_factory.mktemp("flower") / "flower.log", "/healthcheck"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metrics_server(
    request: pytest.FixtureRequest,
    stack_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """`jobrunner metrics` on a free port with basic auth. A module may set `METRICS_ENV` (extra
    JOBRUNNER_* settings, e.g. alert rules) before it starts."""
    env = {
        "JOBRUNNER_METRICS__PORT": "{port}",
        "JOBRUNNER_METRICS__BASIC_AUTH": "{auth}",
        **getattr(request.module, "METRICS_ENV", {}),
    }
    server = Server(
        ["metrics"], env, tmp_path_factory.mktemp("metrics") / "metrics.log", "/metrics"
    )
    yield server
    server.stop()
