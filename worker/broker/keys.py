"""Every Redis key jobrunner itself writes or reads, in one place. The strings are what deployed
Redis data holds: a change here orphans it.

Not here: the tier queues (named by the settings, `[tiers.*]`), kombu's keys (`unacked`,
`unacked_index`, `_kombu.binding.*`) and Celery's (`celery-task-meta-*`).
"""

from __future__ import annotations

from typing import NamedTuple

# Beside the queues (worker/broker/transport.py).
WAKE = "jobrunner:wake:"  # + a queue's Redis key: list of wake tokens, one per message
# A wake list lasts this long after its last push (tokens only save waiting for the BRPOP's
# timeout, so one expired beside queued messages delays them a second at most): else each
# client process's control-reply queue left its wake list behind for good.
WAKE_TTL_MS = 24 * 3600 * 1000
# Messages refused before their step ran (worker/broker/set_aside.py, worker/store/set_aside.py).
SET_ASIDE = "jobrunner:set-aside"  # sorted set: set-aside entry ids by time
SET_ASIDE_ENTRY = "jobrunner:set-aside:"  # + entry id: hash, the message, its queue and reason
SET_ASIDE_SEQ = "jobrunner:set-aside-seq"  # counter: the last entry id handed out
# + a fresh id from SET_ASIDE_SEQ + ":" + a key's name: a queue or wake list found holding another
# type than list (worker/broker/transport.py), renamed here as it was for a person to inspect.
SET_ASIDE_KEY = "jobrunner:set-aside:key:"

# Jobs (worker/store/jobs.py).
JOB = "jobrunner:job:"  # + job id: hash, the job's record (its lists: JobKeys)
JOBS = "jobrunner:jobs"  # sorted set: job ids by submission time
OPEN_JOBS = "jobrunner:jobs:open"  # sorted set: unfinished job ids by deadline
RETRY_JOBS = "jobrunner:jobs:retry"  # sorted set: failed job ids by when their next attempt goes
IDEMPOTENCY = "jobrunner:idempotency:"  # + idempotency key: string, the job id it is bound to
METRICS = "jobrunner:metrics"  # hash: the counters and histograms the exporter and alerts read

# Dead letters (worker/store/dead_letters.py).
DEAD_LETTERS = "jobrunner:dlq"  # sorted set: failed job ids by time of death
DEAD_LETTER = "jobrunner:dlq:"  # + job id: hash, the failed job's entry

# Workers (worker/store/deliveries.py, worker/store/heartbeat.py).
DELIVERIES = "jobrunner:deliveries:"  # + task id: counter of a message's re-deliveries
WORKER = "jobrunner:worker:"  # + node name: hash, the worker's last heartbeat
ADMISSION = "jobrunner:admission"  # hash: memory_reserve_mb overrides the config, fleet-wide

# Access (worker/store/tokens.py, worker/store/audit.py).
TOKEN = "jobrunner:token:"  # + token id: hash, an API token's argon2 hash, role, scope, expiry
TOKENS = "jobrunner:tokens"  # sorted set: token ids by creation time
AUDIT = "jobrunner:audit"  # stream: who did what, when, from where, with what outcome
# Control (worker/store/control.py, worker/scheduling/).
PAUSED = "jobrunner:paused"  # set: queues the fetch script skips (a paused tier's queues)
PAUSES = "jobrunner:pauses"  # hash: paused tier -> JSON {by, at}, for status and resume
PAUSED_IDLE = "jobrunner:paused:idle"  # list, never written: blocked on when all queues pause
PAUSED_PIPELINES = "jobrunner:paused:pipelines"  # set: pipelines whose steps workers park
PARKED = "jobrunner:parked:"  # + pipeline: list of its parked messages (unacked-entry form)
SCHEDULE = "jobrunner:schedule:"  # + schedule name: hash, its watermark and last firing
TRIGGER = "jobrunner:trigger:"  # + trigger name: hash, its batch state; + ":seen", ":pending"
LIMIT = "jobrunner:limit:"  # + resource: sorted set, task id -> its slot's lease expiry
RATE = "jobrunner:rate"  # the `limits` package's key prefix for [limits.NAME] rates
BEAT = "jobrunner:beat"  # celery-redbeat's key prefix: its entries and the schedulers' lock

# Monitoring (worker/monitoring/alerts.py).
ALERTS = "jobrunner:alerts"  # hash: rule name -> the firing alert (JSON)

# Per-step runs (worker/store/step_stats.py); counters and histograms are fields of METRICS.
STEP_VALUES = "jobrunner:step_values"  # hash: "pipeline|step|name" -> last ctx.metric value
STEP_HISTORIES = "jobrunner:step_history"  # set: "pipeline|step|measure" with a history list
STEP_HISTORY = "jobrunner:step_history:"  # + "pipeline|step|measure": list, newest run first

# Cached steps (worker/store/step_cache.py).
STEP_CACHE = "jobrunner:cache"  # sorted set: cache entry keys by last use
STEP_CACHE_ENTRY = "jobrunner:cache:"  # + entry key (sha256): string, the entry (JSON); expires
STEP_CACHE_RESULTS = "jobrunner:cache-results:"  # + job id: hash, result digest -> entry key


class JobKeys(NamedTuple):
    """The Redis keys of one job; all expire together once it finished."""

    record: str  # JOB + job id
    done: str  # list: the outcome, pushed once it finished; waiters block on it
    failures: str  # list: one entry per failed step
    promotions: str  # list: the starvation guard's moves of the job's messages
    steps: str  # list: one entry per task run, the job's step tree (worker/monitoring/status.py)


def job_keys(job_id: str) -> JobKeys:
    base = JOB + job_id
    return JobKeys(base, base + ":done", base + ":failures", base + ":promotions", base + ":steps")


def wake_key(queue_key: str) -> str:
    """The list of wake tokens beside a queue's Redis list."""
    return WAKE + queue_key
