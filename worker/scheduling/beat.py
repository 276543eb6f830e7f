"""`jobrunner scheduler`: celery beat, with celery-redbeat's scheduler holding a lock in Redis.

Any number of schedulers may run: each blocks at start until it holds the lock (redbeat's
`beat_init` handler), and the holder renews it every tick, so exactly one fires; when it dies
its lock lapses after `scheduler.lock_timeout_s` and a standby takes over. Beat's one entry here
is jobrunner's tick: instead of sending a task, firing it fires every due schedule and trigger
through the normal client (worker/scheduling/schedules.py, triggers.py), whose idempotency keys
make a takeover or a restart harmless. Only public names of redbeat and of Celery's `Scheduler`
are used.
"""

from __future__ import annotations

import math
import time
from typing import Any

from celery import Celery
from redbeat import RedBeatScheduler

from jobrunner.config import get_settings
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.keys import BEAT
from jobrunner.worker.client import Client
from jobrunner.worker.scheduling.schedules import Schedules
from jobrunner.worker.scheduling.triggers import Triggers

TICK = "jobrunner.schedules"  # beat's entry (and the name it logs); no task is sent for it
SCHEDULER_CLASS = f"{__name__}:JobScheduler"


def beat_config(tick_s: float, lock_timeout_s: float, redis_url: str) -> dict[str, Any]:
    """What redbeat and beat read from the app's configuration."""
    return {
        "redbeat_redis_url": redis_url,
        "redbeat_redis_options": {},  # not the broker's transport options (redbeat's fallback)
        "redbeat_key_prefix": BEAT,
        "redbeat_lock_timeout": math.ceil(lock_timeout_s),
        "beat_schedule": {TICK: {"task": TICK, "schedule": tick_s}},
        "beat_max_loop_interval": tick_s,
    }


class JobScheduler(RedBeatScheduler):  # type: ignore[misc]
    def __init__(self, app: Celery, *args: Any, **kwargs: Any) -> None:
        settings = connection.resolve(get_settings())
        tick = settings.scheduler
        app.conf.update(beat_config(tick.tick_s, tick.lock_timeout_s, settings.broker_url))
        client = Client(settings)
        self.schedules = Schedules(client, settings)
        self.triggers = Triggers(client, settings)
        super().__init__(app, *args, **kwargs)

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **_: Any) -> None:
        """Beat's tick entry is due: fire the due schedules and scan the triggers' folders
        (sending no task of its own)."""
        if advance:
            self.reserve(entry)  # redbeat moves the entry's next due time on, in Redis
        now = time.time()
        self.schedules.fire_due(now)
        self.triggers.poll(now)
