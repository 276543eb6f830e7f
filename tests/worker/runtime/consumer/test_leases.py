"""At most one live run per step, on real Redis and real workers: a worker that hits an
unrecoverable error keeps renewing the lease of the step it lets finish, so no other worker runs
it meanwhile. (A worker killed outright takes its pool processes along: Celery sets
PR_SET_PDEATHSIG in them.)"""

from __future__ import annotations

import subprocess

import psutil
import pytest
import redis

from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.support.polling import eventually
from tests.support.steps import STARTS

pytestmark = pytest.mark.integration

SHORT_LEASE = {"JOBRUNNER_RELIABILITY__LEASE_S": "2", "JOBRUNNER_POOLS__GENERAL__CONCURRENCY": "2"}


def _started(redis_client: redis.Redis, *tags: bytes) -> None:
    eventually(lambda: redis_client.lrange(STARTS, 0, -1) == list(tags), 60)


def _unblock_with_an_error(redis_client: redis.Redis, worker: subprocess.Popen[bytes]) -> bool:
    """End the worker's blocked wait for work (its main process's BRPOP) with an error reply,
    which Celery treats as unrecoverable; False while it is not blocked there."""
    mine = {f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.Process(worker.pid).net_connections()}
    waiting = [c for c in redis_client.client_list() if c["cmd"] == "brpop" and c["addr"] in mine]
    return any(redis_client.client_unblock(int(c["id"]), error=True) for c in waiting)


def test_a_failing_worker_lets_its_step_finish_under_lease(
    workers: Workers, client: Client, redis_client: redis.Redis
) -> None:
    failing = workers.start("general", "general-failing@test", **SHORT_LEASE)
    job = client.submit("sleepy", {"sleep_ms": 12_000, "tag": "once"}, tier="high")
    _started(redis_client, b"once")
    # A worker of the express pool (high only) is ready to take the step should it come back.
    workers.start("express", "express-other@test", JOBRUNNER_RELIABILITY__LEASE_S="2")
    # An error reply to the general worker's wait (CLIENT UNBLOCK ... ERROR) fails inside Celery's
    # event loop, which Celery treats as unrecoverable: it stops, letting its running step finish.
    eventually(lambda: _unblock_with_an_error(redis_client, failing), 30)
    log = workers.log_dir / "general-failing@test.log"
    eventually(lambda: "Unrecoverable error" in log.read_text(errors="replace"), 30)
    assert job.wait(60).state == "SUCCESS"
    assert redis_client.lrange(STARTS, 0, -1) == [b"once"]  # never started a second time
    failing.wait(30)
