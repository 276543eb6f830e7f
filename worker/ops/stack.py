"""The local stack of `jobrunner up` and `demo`: broker, one worker per pool, Flower, and (for
`up`) the metrics exporter, the HTTP API, and the scheduler when schedules or triggers are
configured."""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path

from celery import Celery

from jobrunner.config import JobrunnerError, Settings
from jobrunner.tasks.registry import load_pipelines
from jobrunner.worker.app import create_app
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.embedded import EmbeddedRedis
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring import flower, metrics
from jobrunner.worker.ops.supervisor import Service, Supervisor
from jobrunner.worker.scheduling.schedules import Schedules
from jobrunner.worker.scheduling.triggers import Triggers


class LocalStack:
    """Use as a context manager; `settings` then carries the broker URL in use."""

    def __init__(
        self,
        settings: Settings,
        *,
        log_dir: Path | None = None,
        with_flower: bool = True,
        with_metrics: bool = False,
        with_api: bool = False,
    ):
        self.settings = settings
        self.log_dir = log_dir
        self.with_flower = with_flower
        self.with_metrics = with_metrics
        self.with_api = with_api  # bearer tokens only: `jobrunner tokens create`
        self.redis: EmbeddedRedis | None = None
        self.credentials: flower.Credentials | None = None
        self.metrics_credentials: flower.Credentials | None = None
        self.supervisor: Supervisor | None = None

    @cached_property
    def app(self) -> Celery:
        """An app on the stack's broker, for pinging its workers (known once it started)."""
        return create_app(self.settings, set_as_current=False)

    def _start_broker(self) -> None:
        if self.settings.broker_url:
            connection.check_reachable(self.settings)
            return
        running = connection.resolve(self.settings)
        if running.broker_url:
            try:
                connection.check_reachable(running)
            except connection.BrokerError:
                pass  # a stale URL file from a stack that was killed
            else:
                raise JobrunnerError(
                    f"a local stack already runs ({connection.broker_url_file(self.settings)}); "
                    "stop it first, or point JOBRUNNER_BROKER_URL at it"
                )
        self.redis = EmbeddedRedis(
            self.settings.data_dir, url_file=connection.broker_url_file(self.settings)
        )
        url = self.redis.start()
        self.settings = self.settings.model_copy(update={"broker_url": url})

    def _services(self) -> list[Service]:
        env = {
            "JOBRUNNER_BROKER_URL": self.settings.broker_url,
            "JOBRUNNER_DATA_DIR": str(self.settings.data_dir.resolve()),
        }
        services = [
            Service(f"worker-{name}", ["-m", "jobrunner", "worker", "--pool", name], env)
            for name in self.settings.pools
        ]
        if self.with_flower:
            self.credentials = flower.local_credentials(self.settings)
            services.append(
                Service(
                    "flower",
                    ["-m", "celery", *flower.flower_argv(self.settings)],
                    {**env, **flower.flower_env(self.credentials)},
                )
            )
        if self.settings.schedules or self.settings.triggers:  # checked on entering
            services.append(Service("scheduler", ["-m", "jobrunner", "scheduler"], env))
        if self.with_metrics:
            # Generated (or configured) credentials reach the exporter through its settings.
            self.metrics_credentials = metrics.credentials(self.settings)
            services.append(Service("metrics", ["-m", "jobrunner", "metrics"], env))
        if self.with_api:
            services.append(Service("api", ["-m", "jobrunner", "api"], env))
        return services

    def __enter__(self) -> LocalStack:
        load_pipelines(self.settings)  # bad steps or pipelines stop us before anything starts
        client = Client(self.settings)
        Schedules(client, self.settings).check()  # so do bad schedules and triggers
        Triggers(client, self.settings).check()
        self._start_broker()
        try:
            self.supervisor = Supervisor(self._services(), self.log_dir)
            self.supervisor.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def wait_for_workers(self, timeout_s: float = 60.0) -> list[str]:
        """Block until one worker of every pool answers a ping; their node names."""
        wanted = set(self.settings.pools)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replies = self.app.control.ping(timeout=0.5) or []
            nodes = sorted(node for reply in replies for node in reply)
            if wanted <= {node.split("@", 1)[0] for node in nodes}:
                return nodes
        raise JobrunnerError(f"workers did not answer within {timeout_s:.0f} s; see their logs")

    def __exit__(self, *exc_info: object) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.redis is not None:
            self.redis.stop()
