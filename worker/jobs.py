"""Job records in Redis: what was submitted, when it started and ended, its result or failures.

A job is finished exactly once (first writer wins, atomically in Redis); finishing pushes to a
per-job list that waiters block on, so waiting costs no polling and no N-parents walk.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from config import Settings
from worker import broker

PREFIX = "jobrunner:job:"
INDEX = "jobrunner:jobs"  # sorted set of job ids by submission time
OPEN = "jobrunner:jobs:open"  # sorted set of unfinished job ids by deadline
IDEMPOTENCY = "jobrunner:idempotency:"  # idempotency key -> job id

PENDING, STARTED, SUCCESS, FAILURE = "PENDING", "STARTED", "SUCCESS", "FAILURE"

# KEYS: the open-jobs index, then every JobKeys (record first, done list second).
# ARGV: now, state, field, value, ttl, job id.
_FINISH = """
if redis.call('HSETNX', KEYS[2], 'finished_at', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'state', ARGV[2], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[6])
for i = 2, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""

# KEYS: record, promotions list. ARGV: entry. Only for a job that exists; a job that already
# finished (its record expiring) gets the same expiry on the list, so nothing outlives it.
_ADD_PROMOTION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
"""


@dataclass(frozen=True)
class JobRecord:
    id: str
    pipeline: str
    tier: str
    payload: dict[str, Any]
    state: str
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    retries: int = 0  # steps retried under their retry policy
    deadline_at: float | None = None
    promotions: list[dict[str, Any]] = field(default_factory=list)  # starvation guard moves

    @property
    def finished(self) -> bool:
        return self.state in (SUCCESS, FAILURE)

    @property
    def wait_s(self) -> float | None:
        """Seconds from submission to the first task starting."""
        return None if self.started_at is None else self.started_at - self.submitted_at

    @property
    def total_s(self) -> float | None:
        """Seconds from submission to the job finishing."""
        return None if self.finished_at is None else self.finished_at - self.submitted_at

    @property
    def run_s(self) -> float | None:
        """Seconds from the first task starting to the job finishing."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class JobKeys(NamedTuple):
    """The Redis keys of one job; all expire together once it finished."""

    record: str
    done: str
    failures: str
    promotions: str


def _keys(job_id: str) -> JobKeys:
    base = PREFIX + job_id
    return JobKeys(base, base + ":done", base + ":failures", base + ":promotions")


class JobStore:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.redis = client
        self.ttl_s = ttl_s
        self._finish = client.register_script(_FINISH)
        self._add_promotion = client.register_script(_ADD_PROMOTION)

    def create(
        self, job_id: str, pipeline: str, tier: str, payload: dict[str, Any], deadline_s: float
    ) -> None:
        now = time.time()
        record = _keys(job_id).record
        with self.redis.pipeline() as pipe:
            pipe.hset(
                record,
                mapping={
                    "pipeline": pipeline,
                    "tier": tier,
                    "payload": json.dumps(payload),
                    "submitted_at": repr(now),
                    "deadline_at": repr(now + deadline_s),
                },
            )
            pipe.zadd(INDEX, {job_id: now})
            pipe.zadd(OPEN, {job_id: now + deadline_s})
            pipe.execute()

    def delete(self, job_id: str) -> None:
        """Forget a job whose messages never reached the broker."""
        with self.redis.pipeline() as pipe:
            pipe.delete(*_keys(job_id))
            pipe.zrem(INDEX, job_id)
            pipe.zrem(OPEN, job_id)
            pipe.execute()

    def claim_idempotency_key(self, key: str, job_id: str) -> str | None:
        """Bind `key` to `job_id`; if it is bound already, the job id it is bound to."""
        if self.redis.set(IDEMPOTENCY + key, job_id, nx=True, ex=self.ttl_s):
            return None
        existing = self.redis.get(IDEMPOTENCY + key)
        return existing.decode() if existing else None

    def release_idempotency_key(self, key: str) -> None:
        self.redis.delete(IDEMPOTENCY + key)

    def overdue(self, now: float, limit: int = 100) -> list[str]:
        """Unfinished jobs whose deadline passed."""
        return [raw.decode() for raw in self.redis.zrangebyscore(OPEN, "-inf", now, 0, limit)]

    def add_retry(self, job_id: str) -> None:
        self.redis.hincrby(_keys(job_id).record, "retries", 1)

    def mark_started(self, job_id: str) -> None:
        self.redis.hsetnx(_keys(job_id).record, "started_at", repr(time.time()))

    def add_failure(self, job_id: str, step: str, error: BaseException) -> None:
        entry = {"step": step, "error": f"{type(error).__name__}: {error}"}
        self.redis.rpush(_keys(job_id).failures, json.dumps(entry))

    def failures(self, job_id: str) -> list[dict[str, str]]:
        return [json.loads(raw) for raw in self.redis.lrange(_keys(job_id).failures, 0, -1)]

    def add_promotion(self, job_id: str, entry: dict[str, Any]) -> bool:
        """Record that one of the job's messages moved up a tier; False for an unknown job."""
        keys = _keys(job_id)
        added = self._add_promotion(keys=[keys.record, keys.promotions], args=[json.dumps(entry)])
        return bool(added)

    def promotions(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(_keys(job_id).promotions, 0, -1)]

    def finish(self, job_id: str, state: str, *, result: Any = None, error: str = "") -> bool:
        """Record the outcome once; False if the job had already finished."""
        value_field, value = (
            ("result", json.dumps(result)) if state == SUCCESS else ("error", error)
        )
        now = repr(time.time())
        won = self._finish(
            keys=[OPEN, *_keys(job_id)], args=[now, state, value_field, value, self.ttl_s, job_id]
        )
        return bool(won)

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, failures and promotions, read in one round trip (waiters and
        status poll this)."""
        keys = _keys(job_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.record)
            pipe.lrange(keys.failures, 0, -1)
            pipe.lrange(keys.promotions, 0, -1)
            record, failures, promotions = pipe.execute()
        raw = {k.decode(): v.decode() for k, v in record.items()}
        if "pipeline" not in raw:
            return None
        state = raw.get("state") or (STARTED if "started_at" in raw else PENDING)
        return JobRecord(
            id=job_id,
            pipeline=raw["pipeline"],
            tier=raw["tier"],
            payload=json.loads(raw["payload"]),
            state=state,
            submitted_at=float(raw["submitted_at"]),
            started_at=float(raw["started_at"]) if "started_at" in raw else None,
            finished_at=float(raw["finished_at"]) if "finished_at" in raw else None,
            result=json.loads(raw["result"]) if "result" in raw else None,
            error=raw.get("error"),
            failures=[json.loads(entry) for entry in failures] if state == FAILURE else [],
            promotions=[json.loads(entry) for entry in promotions],
            retries=int(raw.get("retries", 0)),
            deadline_at=float(raw["deadline_at"]) if "deadline_at" in raw else None,
        )

    def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Block until the job finished or `timeout_s` passed; returns the latest record."""
        done = _keys(job_id).done
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.get(job_id)
            left = deadline - time.monotonic()
            if record is None or record.finished or left <= 0:
                return record
            # Pop-and-push-back on the same list: wakes every waiter, consumes nothing. The block
            # is capped so a lost wake-up (e.g. a broker restart) costs seconds, not forever.
            self.redis.blmove(done, done, min(left, 5.0), "LEFT", "RIGHT")


def open_store(settings: Settings) -> JobStore:
    """The job store on the result Redis, keeping finished jobs for `result_expires`."""
    return JobStore(broker.client(settings.effective_result_url), settings.limits.result_expires)
