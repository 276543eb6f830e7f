"""Job records in Redis: what was submitted, when it started and ended, its result or failures.

A job is finished exactly once (first writer wins, atomically in Redis); finishing pushes to a
per-job list that waiters block on, so waiting costs no polling and no N-parents walk.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

import redis

from jobrunner.config import Settings
from jobrunner.worker.broker import connection, scripts
from jobrunner.worker.broker.keys import (
    IDEMPOTENCY,
    JOBS,
    METRICS,
    OPEN_JOBS,
    RETRY_JOBS,
    job_keys,
)
from jobrunner.worker.store.crypto import CLEAR, Cipher, cipher

log = logging.getLogger("jobrunner.store")

PENDING, STARTED, SUCCESS, FAILURE = "PENDING", "STARTED", "SUCCESS", "FAILURE"
CANCELLED = "CANCELLED"  # final, like SUCCESS and FAILURE: someone cancelled the job
FINAL_STATES = (SUCCESS, FAILURE, CANCELLED)
OUTCOMES = {SUCCESS: "succeeded", FAILURE: "failed", CANCELLED: "cancelled"}  # metric names

# Metrics ride in the same scripts and pipelines as the records they describe (no extra round
# trip): one hash of counters (METRICS), read by the exporter (worker/monitoring/metrics.py).
# Fields are "jobs|<outcome>|<pipeline>|<tier>", "rows_<in|out|quarantined>|<pipeline>|<step>"
# and, per histogram "<wait|run>|<tier>", one field per bucket bound ("|<bound>" or "|+Inf", not
# cumulative) plus "|sum" and "|count".
SEP = "|"

DEFAULT_WAIT_BUCKETS_S = (0.05, 0.25, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)
DEFAULT_RUN_BUCKETS_S = (0.1, 0.5, 2.0, 10.0, 60.0, 300.0, 1800.0, 7200.0)


def bound_field(bound: float) -> str:
    """A histogram bound as written in metric field names (the exporter parses it back)."""
    return format(bound, "g")


def data_flow(result: Any) -> list[tuple[str, int, int, int]]:
    """(step, rows in, rows out, quarantined) per step, from a data pipeline's final result
    (its `steps` list, as the feature pipeline's `store` step returns); [] for other results."""
    steps = result.get("steps") if isinstance(result, dict) else None
    if not isinstance(steps, list):
        return []
    flows = []
    for fact in steps:
        try:
            flows.append(
                (
                    str(fact["step"]),
                    int(fact["rows_in"]),
                    int(fact["rows_out"]),
                    int(fact.get("quarantined", 0)),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue  # not a data-flow fact: nothing to count
    return flows


@dataclass(frozen=True)
class JobHead:
    """What a worker checks before running a step: which job, of which pipeline, finished or
    not (state None while it runs). Read without the payload, so without its key."""

    id: str
    pipeline: str
    state: str | None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


def job_head(job_id: str, pipeline: str, state: str) -> JobHead | None:
    """The head from its record's fields ('' where missing); None if there is no record."""
    return JobHead(job_id, pipeline, state or None) if pipeline else None


@dataclass(frozen=True)
class JobRecord:
    """A job as stored. Payload and result stay as stored (sealed, or clear JSON) until read:
    state, timings and links load without the payload key, so a host lacking it can still
    reap, retry or list the job; only reading `payload` or `result` needs the key."""

    id: str
    pipeline: str
    tier: str
    stored_payload: str = field(repr=False)  # as in Redis: sealed, or clear JSON
    state: str
    submitted_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    retries: int = 0  # steps retried under their retry policy
    deadline_at: float | None = None
    promotions: list[dict[str, Any]] = field(default_factory=list)  # starvation guard moves
    attempt: int = 1  # of its pipeline's on_failure = "retry_job" chain (or of `dlq retry`)
    retry_of: str | None = None  # the failed job this one retries
    cache: bool = True  # False: submitted with cache=False, which its retries keep
    retried_as: str | None = None  # the job that retries this one
    stored_result: str | None = field(default=None, repr=False)  # as stored, like the payload
    cipher: Cipher = field(default=CLEAR, repr=False, compare=False)  # opens the two above

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The submitted payload, opened on first read (JobrunnerError: no key opens it)."""
        payload: dict[str, Any] = json.loads(self.cipher.open(self.stored_payload))
        return payload

    @cached_property
    def result(self) -> Any:
        """The final step's result (None until the job succeeded), opened on first read."""
        return (
            None if self.stored_result is None else json.loads(self.cipher.open(self.stored_result))
        )

    def as_dict(self) -> dict[str, Any]:
        """The record as status and the API show it: payload and result opened, nothing sealed."""
        hidden = {"stored_payload", "stored_result", "cipher"}
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        return {**shown, "payload": self.payload, "result": self.result}

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

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


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int,
        wait_buckets_s: tuple[float, ...] | list[float] = DEFAULT_WAIT_BUCKETS_S,
        run_buckets_s: tuple[float, ...] | list[float] = DEFAULT_RUN_BUCKETS_S,
        cipher: Cipher = CLEAR,
    ) -> None:
        self.redis = client
        self.cipher = cipher  # seals payloads and results at rest (worker/store/crypto.py)
        self.ttl_s = ttl_s
        self.wait_bounds = [bound_field(b) for b in wait_buckets_s]
        self.run_bounds = [bound_field(b) for b in run_buckets_s]
        # start.lua and finish.lua call observe.lua's histogram helper, so it goes first.
        observe = scripts.load("observe")
        self._start = client.register_script(observe + scripts.load("start"))
        self._finish = client.register_script(observe + scripts.load("finish"))
        self._add_promotion = client.register_script(scripts.load("add_promotion"))
        self._claim_keys = client.register_script(scripts.load("claim_keys"))
        self._add_step = client.register_script(scripts.load("add_step"))
        self._create_jobs = client.register_script(scripts.load("create_jobs"))

    def create(
        self,
        jobs: list[tuple[str, dict[str, Any]]],
        pipeline: str,
        tier: str,
        deadline_s: float,
        fields: dict[str, str] | None = None,
    ) -> None:
        """Record submitted jobs ((id, payload) each), however many, in one round trip. Not a
        MULTI: a failure part way is undone by `delete`, as is a failure to send. `fields`: more
        of the record, the same for each (the retry policy, the attempt it is)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for name, args in self.create_commands(jobs, pipeline, tier, deadline_s, fields):
                getattr(pipe, name)(*args)
            pipe.execute()

    def create_commands(
        self,
        jobs: list[tuple[str, dict[str, Any]]],
        pipeline: str,
        tier: str,
        deadline_s: float,
        fields: dict[str, str] | None = None,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The Redis commands that record submitted jobs (see `create`), for a caller that
        sends them with the jobs' messages, submitted now."""
        now = time.time()
        commands: list[tuple[str, tuple[Any, ...]]] = []
        for job_id, payload in jobs:
            record = {
                "pipeline": pipeline,
                "tier": tier,
                "payload": self.cipher.seal(json.dumps(payload)),
                "submitted_at": repr(now),
                "deadline_at": repr(now + deadline_s),
                **(fields or {}),
            }
            commands.append(("hset", (job_keys(job_id).record, None, None, record)))
        commands.append(("zadd", (JOBS, {job_id: now for job_id, _ in jobs})))
        commands.append(("zadd", (OPEN_JOBS, {job_id: now + deadline_s for job_id, _ in jobs})))
        submitted = SEP.join(("jobs", "submitted", pipeline, tier))
        commands.append(("hincrby", (METRICS, submitted, len(jobs))))
        return commands

    def create_many(
        self,
        jobs: list[tuple[str, str]],
        pipeline: str,
        tier: str,
        deadline_s: float,
        fields: dict[str, str] | None = None,
    ) -> None:
        """Record many submitted jobs ((id, payload as JSON) each) as `create` does, in one
        atomic call (create_jobs.lua) that takes the shared fields once: a bulk submission's
        chunk is recorded whole or not at all."""
        now = time.time()
        shared = {"pipeline": pipeline, "tier": tier, "submitted_at": repr(now)}
        shared.update(deadline_at=repr(now + deadline_s), **(fields or {}))
        seal = self.cipher.seal
        self._create_jobs(
            keys=[JOBS, OPEN_JOBS, METRICS],
            args=[
                job_keys("").record,
                repr(now),
                repr(now + deadline_s),
                SEP.join(("jobs", "submitted", pipeline, tier)),
                len(shared),
                *itertools.chain.from_iterable(shared.items()),
                *itertools.chain.from_iterable((job_id, seal(text)) for job_id, text in jobs),
            ],
        )

    def delete(self, job_ids: list[str]) -> None:
        """Forget jobs whose messages never reached the broker."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(*(key for job_id in job_ids for key in job_keys(job_id)))
            pipe.zrem(JOBS, *job_ids)
            pipe.zrem(OPEN_JOBS, *job_ids)
            pipe.execute()

    def claim_idempotency_key(self, key: str, job_id: str) -> str | None:
        """Bind `key` to `job_id`; if it is bound already, the job id it is bound to."""
        if self.redis.set(IDEMPOTENCY + key, job_id, nx=True, ex=self.ttl_s):
            return None
        existing = self.redis.get(IDEMPOTENCY + key)
        return existing.decode() if existing else None

    def claim_idempotency_keys(self, claims: list[tuple[str, str]]) -> list[str | None]:
        """Bind each key to its job id ((key, job id) each, keys distinct) in one round trip;
        per key, None where it is now bound, else the job id it was bound to already."""
        if not claims:
            return []
        bound = self._claim_keys(
            keys=[IDEMPOTENCY + key for key, _ in claims],
            args=[self.ttl_s, *(job_id for _, job_id in claims)],
        )
        return [raw.decode() if raw else None for raw in bound]

    def bound_jobs(self, keys: list[str]) -> list[str | None]:
        """The job id each idempotency key is bound to (None: unused), in one round trip."""
        if not keys:
            return []
        return [
            raw.decode() if raw else None for raw in self.redis.mget(IDEMPOTENCY + k for k in keys)
        ]

    def release_idempotency_key(self, key: str) -> None:
        self.release_idempotency_keys([key])

    def release_idempotency_keys(self, keys: list[str]) -> None:
        """Free keys bound to jobs that were never enqueued, in one round trip."""
        if keys:
            self.redis.delete(*(IDEMPOTENCY + key for key in keys))

    def plan_retry(self, job_id: str) -> bool:
        """After the job failed: if its pipeline retries failed jobs and attempts are left,
        schedule the next attempt (`take_due_retries` hands it out); whether it did."""
        raw = self.redis.hmget(job_keys(job_id).record, "retry_policy", "attempt")
        if raw[0] is None:
            return False
        policy = json.loads(raw[0])
        if int(raw[1] or 1) > policy["max_job_retries"]:
            return False
        self.redis.zadd(RETRY_JOBS, {job_id: time.time() + policy["job_retry_delay_s"]})
        return True

    def take_due_retries(self, now: float, limit: int = 100) -> list[str]:
        """Failed jobs whose next attempt is due, each handed to one caller only."""
        due = [raw.decode() for raw in self.redis.zrangebyscore(RETRY_JOBS, "-inf", now, 0, limit)]
        return [job_id for job_id in due if self.redis.zrem(RETRY_JOBS, job_id)]

    def return_retry(self, job_id: str, due: float) -> None:
        """Give back a retry taken by `take_due_retries` that this caller cannot make."""
        self.redis.zadd(RETRY_JOBS, {job_id: due})

    def link_retry(self, old: str, new: str) -> None:
        self.redis.hset(job_keys(old).record, "retried_as", new)

    def overdue(self, now: float, limit: int = 100) -> list[str]:
        """Unfinished jobs whose deadline passed."""
        return [raw.decode() for raw in self.redis.zrangebyscore(OPEN_JOBS, "-inf", now, 0, limit)]

    def add_retry(self, job_id: str) -> None:
        self.redis.hincrby(job_keys(job_id).record, "retries", 1)

    def head(self, job_id: str) -> JobHead | None:
        """The job's pipeline and final state (None: no such job), in one HMGET."""
        fields = self.redis.hmget(job_keys(job_id).record, "pipeline", "state")
        return job_head(job_id, *(raw.decode() if raw else "" for raw in fields))

    def start_step(self, job_id: str, *, first: bool) -> str | None:
        """As a step starts: the job's final state if it has finished (the step must not run),
        else None; the job's first step also stamps its start (the first time only) and observes
        its wait. One round trip either way (start.lua)."""
        state = self._start(
            keys=[job_keys(job_id).record, METRICS],
            args=[repr(time.time()), int(first), *self.wait_bounds],
        )
        return state.decode() if state else None

    def add_step(
        self, job_id: str, entry: dict[str, Any], riders: Sequence[scripts.Call] = ()
    ) -> None:
        """Record one run of one of the job's tasks (id, step, outcome, worker, times), for the
        step tree. Kept while the job may still run; finishing the job sets its usual expiry.
        `riders`: other writes about the run, sent in the same round trip (see `_run`)."""
        steps = job_keys(job_id).steps
        self._run(
            scripts.Call(self._add_step, [steps], [json.dumps(entry), 2 * self.ttl_s]), riders
        )

    def _run(self, call: scripts.Call, riders: Sequence[scripts.Call]) -> Any:
        """`call`'s reply, with `riders` sent first in the same round trip: a run's figures
        (worker/monitoring/step_metrics.py) ride with its record, so a step costs one write when
        it ends. A rider's failure is logged, never raised: a lost figure never fails the step
        it describes."""
        if not riders:
            return call.run()
        *ridden, own = scripts.call_all(self.redis, [*riders, call])
        for reply in ridden:
            if isinstance(reply, Exception):
                log.error("a write riding with a step's end failed: %s", reply)
        if isinstance(own, Exception):
            raise own
        return own

    def steps(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(job_keys(job_id).steps, 0, -1)]

    def add_failure(self, job_id: str, step: str, error: BaseException) -> None:
        entry = {"step": step, "error": f"{type(error).__name__}: {error}"}
        self.redis.rpush(job_keys(job_id).failures, json.dumps(entry))

    def failures(self, job_id: str) -> list[dict[str, str]]:
        return [json.loads(raw) for raw in self.redis.lrange(job_keys(job_id).failures, 0, -1)]

    def add_promotion(self, job_id: str, entry: dict[str, Any]) -> bool:
        """Record that one of the job's messages moved up a tier; False for an unknown job."""
        keys = job_keys(job_id)
        added = self._add_promotion(keys=[keys.record, keys.promotions], args=[json.dumps(entry)])
        return bool(added)

    def promotions(self, job_id: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(job_keys(job_id).promotions, 0, -1)]

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        result: Any = None,
        error: str = "",
        step: dict[str, Any] | None = None,
        riders: Sequence[scripts.Call] = (),
    ) -> bool:
        """Record the outcome once; False if the job had already finished. `step`: the final
        task's run for the step tree (see add_step), recorded in the same round trip, as are
        `riders` (see `_run`)."""
        value_field, value = (
            ("result", self.cipher.seal(json.dumps(result)))
            if state == SUCCESS
            else ("error", error)
        )
        now = repr(time.time())
        outcome = OUTCOMES[state]
        flows = [str(part) for flow in data_flow(result) for part in flow]
        args = [
            now,
            *(state, value_field, value, self.ttl_s, job_id, outcome),
            json.dumps(step) if step else "",
            len(self.run_bounds),
            *self.run_bounds,
            *flows,
        ]
        call = scripts.Call(self._finish, [OPEN_JOBS, METRICS, *job_keys(job_id)], args)
        return bool(self._run(call, riders))

    def get(self, job_id: str) -> JobRecord | None:
        """The job's record, failures and promotions, read in one round trip (waiters and
        status poll this). Payload and result are opened only when read (see JobRecord)."""
        keys = job_keys(job_id)
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
            stored_payload=raw["payload"],
            state=state,
            submitted_at=float(raw["submitted_at"]),
            started_at=float(raw["started_at"]) if "started_at" in raw else None,
            finished_at=float(raw["finished_at"]) if "finished_at" in raw else None,
            error=raw.get("error"),
            failures=[json.loads(entry) for entry in failures] if state == FAILURE else [],
            promotions=[json.loads(entry) for entry in promotions],
            retries=int(raw.get("retries", 0)),
            deadline_at=float(raw["deadline_at"]) if "deadline_at" in raw else None,
            attempt=int(raw.get("attempt", 1)),
            retry_of=raw.get("retry_of"),
            cache=raw.get("cache") != "0",
            retried_as=raw.get("retried_as"),
            stored_result=raw.get("result"),
            cipher=self.cipher,
        )

    def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Block until the job finished or `timeout_s` passed; returns the latest record."""
        done = job_keys(job_id).done
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
    return JobStore(
        connection.client(settings.effective_result_url),
        settings.limits.result_expires,
        settings.metrics.wait_buckets_s,
        settings.metrics.run_buckets_s,
        cipher(settings),
    )
