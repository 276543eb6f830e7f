"""The dead-letter store: every job that failed, with why, where and what it was given.

One entry per failed job, keyed by job id, in Redis; entries never expire (only `purge` removes
them). `jobrunner dlq retry` submits the job again, as a new job with the same pipeline, tier
and payload.
"""

from __future__ import annotations

import json
import time
import traceback as tb
from typing import Any

import redis

from jobrunner.worker.broker.keys import DEAD_LETTER, DEAD_LETTERS
from jobrunner.worker.store.crypto import CLEAR, Cipher
from jobrunner.worker.store.jobs import FAILURE, SUCCESS, JobStore

TRACEBACK_LIMIT = 8000  # characters kept of a traceback
SUMMARY = ("job_id", "pipeline", "tier", "step", "error", "time")  # an entry in one line


def format_traceback(error: BaseException) -> str:
    text = "".join(tb.format_exception(error))
    return text[-TRACEBACK_LIMIT:]


class DeadLetterStore:
    def __init__(self, client: redis.Redis, cipher: Cipher = CLEAR) -> None:
        self.redis = client
        self.cipher = cipher  # seals the payload at rest (worker/store/crypto.py)

    def add(self, entry: dict[str, Any]) -> None:
        """Keep `entry` (it must hold job_id) until purged. Its payload is sealed unless it is
        sealed already (copied as a job record stores it)."""
        now = time.time()
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in entry.items()}
        if "payload" in fields:
            fields["payload"] = self.cipher.seal_once(fields["payload"])
        with self.redis.pipeline() as pipe:
            pipe.hset(DEAD_LETTER + entry["job_id"], mapping={**fields, "time": repr(now)})
            pipe.zadd(DEAD_LETTERS, {entry["job_id"]: now})
            pipe.execute()

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(DEAD_LETTER + job_id)
        if not raw:
            return None
        entry: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        if "payload" in entry:
            entry["payload"] = self.cipher.open(entry["payload"])
        for key in ("payload", "failures", "deliveries"):
            if key in entry:
                entry[key] = json.loads(entry[key])
        entry["time"] = float(entry["time"])
        return entry

    def summary(self, job_id: str) -> dict[str, Any] | None:
        """The entry's SUMMARY fields only, its payload left sealed: what status lists, read
        whether or not this host holds the payload key."""
        values = self.redis.hmget(DEAD_LETTER + job_id, SUMMARY)
        if values[0] is None:
            return None
        entry: dict[str, Any] = {
            k: None if v is None else v.decode() for k, v in zip(SUMMARY, values, strict=True)
        }
        entry["time"] = float(entry["time"])
        return entry

    def ids(self) -> list[str]:
        return [raw.decode() for raw in self.redis.zrange(DEAD_LETTERS, 0, -1)]

    def entries(self) -> list[dict[str, Any]]:
        return [entry for job_id in self.ids() if (entry := self.get(job_id)) is not None]

    def remove(self, job_id: str) -> bool:
        with self.redis.pipeline() as pipe:
            pipe.delete(DEAD_LETTER + job_id)
            pipe.zrem(DEAD_LETTERS, job_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def purge(self, older_than_s: float) -> int:
        """Remove entries older than `older_than_s`; how many went."""
        cutoff = time.time() - older_than_s
        old = [raw.decode() for raw in self.redis.zrangebyscore(DEAD_LETTERS, "-inf", cutoff)]
        return sum(self.remove(job_id) for job_id in old)


def fail_job(
    jobs: JobStore,
    letters: DeadLetterStore,
    job_id: str,
    *,
    step: str,
    summary: str,
    error: BaseException | None = None,
    deliveries: int = 1,
) -> bool:
    """Dead-letter the job, then fail it (once: False if it had already finished).

    The entry is written first, so whoever sees the job failed finds its dead letter.
    """
    record = jobs.get(job_id)
    if record is None or record.finished:
        return False
    letters.add(
        {
            "job_id": job_id,
            "pipeline": record.pipeline,
            "tier": record.tier,
            "payload": record.stored_payload,  # copied sealed: no key needed to fail a job
            "step": step,
            "error_type": type(error).__name__ if error else "",
            "error": summary,
            "traceback": format_traceback(error) if error else "",
            "deliveries": deliveries,
            "failures": jobs.failures(job_id),
        }
    )
    if jobs.finish(job_id, FAILURE, error=summary):
        jobs.plan_retry(job_id)  # its pipeline's on_failure = "retry_job"
        return True
    finished = jobs.get(job_id)  # it finished meanwhile: a success keeps no dead letter
    if finished is not None and finished.state == SUCCESS:
        letters.remove(job_id)
    return False
