"""The local stack of `jobrunner up` and `demo`: broker, one worker per pool, Flower, and (for
`up`) the metrics exporter, the HTTP API, and the scheduler when schedules or triggers are
configured.

While it runs, <data_dir>/stack.json names its processes (pid and start time, so a reused pid is
never mistaken for one of ours). Its children die with it (PR_SET_PDEATHSIG); a stack left over
anyway (another system, an older jobrunner) is found at the next start: if its `up` is gone, it
is stopped with a message, and `jobrunner down` stops a running one."""

from __future__ import annotations

import json
import os
import time
from functools import cached_property
from pathlib import Path

import psutil
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

STACK_FILE = "stack.json"
STOP_TIMEOUT_S = 90.0  # a warm stop lets running steps finish


def _stack_file(settings: Settings) -> Path:
    return settings.data_dir / STACK_FILE


def _runs(process: psutil.Process) -> bool:
    """Whether it runs still (psutil checks the start time: a reused pid is not it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _process(entry: dict[str, object]) -> psutil.Process | None:
    """The recorded process if it still runs (same pid, same start time), else None."""
    try:
        process = psutil.Process(int(str(entry["pid"])))
    except (psutil.Error, KeyError, ValueError):
        return None
    return process if process.create_time() == entry["started"] and _runs(process) else None


def _wait_gone(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until `processes` ended (a zombie has: not our child, we cannot reap it); those
    still running after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _runs(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def recorded_processes(settings: Settings) -> dict[str, psutil.Process]:
    """The recorded stack's processes that still run, by name ("up" first)."""
    try:
        entries = json.loads(_stack_file(settings).read_text())
    except (OSError, ValueError):
        return {}
    found = {str(entry.get("name")): _process(entry) for entry in entries}
    return {name: process for name, process in found.items() if process is not None}


def stop_stack(settings: Settings, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop the recorded local stack; the names of what was still running. A live `up` is asked
    to stop (SIGTERM: it stops the rest warmly); without it, its processes are, and whatever did
    not stop in `timeout_s` is killed."""
    running = recorded_processes(settings)
    targets = [running["up"]] if "up" in running else list(running.values())
    for process in targets:
        process.terminate()
    alive = _wait_gone(targets, timeout_s)
    for process in alive:
        process.kill()
    _wait_gone(alive, 10)
    _stack_file(settings).unlink(missing_ok=True)
    if "up" not in running:  # nobody else removes the stale broker URL
        connection.broker_url_file(settings).unlink(missing_ok=True)
    return list(running)


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
        self.notices: list[str] = []  # what a person should know about the start

    @cached_property
    def app(self) -> Celery:
        """An app on the stack's broker, for pinging its workers (known once it started)."""
        return create_app(self.settings, set_as_current=False)

    def _start_broker(self) -> None:
        if self.settings.broker_url:
            connection.check_reachable(self.settings)
            return
        leftover = recorded_processes(self.settings)
        if "up" in leftover:
            raise JobrunnerError(
                f"a local stack already runs (jobrunner up, pid {leftover['up'].pid}); stop it "
                "with `jobrunner down`, or point JOBRUNNER_BROKER_URL at it"
            )
        if leftover:
            self.notices.append(
                f"stopped a stale local stack whose `jobrunner up` was gone: {', '.join(leftover)}"
            )
            stop_stack(self.settings)
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
            self.supervisor = Supervisor(self._services(), self.log_dir, self._record)
            self.supervisor.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _record(self) -> None:
        """Name this stack's processes in <data_dir>/stack.json (owner only)."""
        pids = [("up", os.getpid())]
        if self.redis is not None and self.redis.process is not None:
            pids.append(("redis", self.redis.process.pid))
        if self.supervisor is not None:
            pids += [(s.name, s.process.pid) for s in self.supervisor.services if s.process]
        entries = []
        for name, pid in pids:
            try:
                entries.append(
                    {"name": name, "pid": pid, "started": psutil.Process(pid).create_time()}
                )
            except psutil.Error:  # exited meanwhile: the supervisor restarts it and records again
                continue
        path = _stack_file(self.settings)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(entries, handle)

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
        if self.supervisor is not None:
            _stack_file(self.settings).unlink(missing_ok=True)
