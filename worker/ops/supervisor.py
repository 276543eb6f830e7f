"""A small process supervisor for the local stack: spawn, reap, respawn, stop on a signal.

Children run in their own session, so a Ctrl-C in the terminal reaches only us; we then send each
child SIGTERM, which Celery treats as a warm shutdown (running steps finish), and wait for it.
Each child dies with us too (PR_SET_PDEATHSIG, worker/broker/lifeline.py): killed with SIGKILL,
we leave nothing running unsupervised.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from jobrunner.worker.broker.lifeline import child_of_this_process

log = logging.getLogger("jobrunner.supervisor")

RESPAWN_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class Service:
    """One long-running child: `argv` run with this Python (`python -m ...`)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    def __init__(
        self,
        services: list[Service],
        log_dir: Path | None = None,
        on_spawn: Callable[[], object] | None = None,
    ) -> None:
        """With `log_dir`, each child's output goes to <log_dir>/<name>.log, else to ours.
        `on_spawn` is called after each child (re)started (to record the stack's pids)."""
        self.services = services
        self.log_dir = log_dir
        self.on_spawn = on_spawn
        self.stopping = False
        self._logs: list[IO[bytes]] = []

    def _spawn(self, service: Service) -> None:
        output: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = open(self.log_dir / f"{service.name}.log", "ab")  # noqa: SIM115
            self._logs.append(output)
        service.process = subprocess.Popen(
            [sys.executable, *service.argv],
            env={**os.environ, **service.env},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=True,
            preexec_fn=child_of_this_process(),
        )
        log.info("started %s (pid %s)", service.name, service.process.pid)
        if self.on_spawn is not None:
            self.on_spawn()

    def start(self) -> None:
        for service in self.services:
            self._spawn(service)

    def reap(self) -> None:
        """Respawn children that died on their own, backing off if they keep dying."""
        now = time.monotonic()
        for service in self.services:
            process = service.process
            if process is None or process.poll() is None:
                continue
            if service.next_start == 0.0:
                delay = RESPAWN_BACKOFF_S[min(service.restarts, len(RESPAWN_BACKOFF_S) - 1)]
                log.warning(
                    "%s exited with %s; restarting in %.0f s",
                    service.name,
                    process.returncode,
                    delay,
                )
                service.next_start = now + delay
            elif now >= service.next_start:
                service.restarts += 1
                service.next_start = 0.0
                self._spawn(service)

    def request_stop(self, signum: int = signal.SIGTERM, _frame: object = None) -> None:
        self.stopping = True

    def run(self) -> None:
        """Supervise until SIGINT or SIGTERM, then stop every child."""
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not self.stopping:
                self.reap()
                time.sleep(0.2)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.stop()

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM to all, wait up to `timeout_s` for running steps to finish, then SIGKILL."""
        running = [s.process for s in self.services if s.process and s.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %s did not stop within %.0f s; killing it", process.pid, timeout_s)
                process.kill()
                process.wait()
        for handle in self._logs:
            handle.close()
        self._logs.clear()
