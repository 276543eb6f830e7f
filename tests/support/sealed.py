"""A job record this process cannot read: its payload sealed under a key nobody configured."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from cryptography.fernet import Fernet

from jobrunner.worker.store.crypto import Cipher
from jobrunner.worker.store.dead_letters import DeadLetterStore
from jobrunner.worker.store.jobs import JobStore


@contextmanager
def unreadable_job(client: redis.Redis, deadline_s: float = 3600) -> Iterator[str]:
    """An open job of `chain3` whose record is sealed under a throwaway key; removed after,
    with its dead letter if it failed meanwhile."""
    store = JobStore(client, 60, (1.0,), (1.0,), Cipher([Fernet.generate_key().decode()]))
    job_id = uuid.uuid4().hex
    store.create([(job_id, {"secret": 1})], "chain3", "low", deadline_s=deadline_s)
    try:
        yield job_id
    finally:
        store.delete([job_id])
        DeadLetterStore(client).remove(job_id)
