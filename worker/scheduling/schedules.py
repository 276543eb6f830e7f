"""Schedules: when each fires, what it submits, and what it fired last.

A schedule's firing times are fixed by its clock alone: cron times in its timezone, or multiples
of `every` seconds since the epoch. So any scheduler (a standby taking over, a restart, a
backfill) names the same firing the same way, and each firing submits through the normal client
with the idempotency key `schedule:NAME:TIME`: whoever submits it twice gets the first job back.

The scheduler keeps a watermark per schedule in Redis, the time up to which it has fired. Each
tick fires every firing time after the watermark, though none older than the schedule's
`catch_up` (plus a few ticks of grace for a slow tick): a scheduler restarted after downtime
fires what it missed within that window, once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from croniter import croniter

from jobrunner.config import ConfigError, JobrunnerError, Settings
from jobrunner.config.settings import ScheduleSettings
from jobrunner.worker.broker.keys import SCHEDULE
from jobrunner.worker.client import Client, Job
from jobrunner.worker.scheduling.base import Submitter

log = logging.getLogger("jobrunner.scheduler")

GRACE_TICKS = 5  # a tick this late still fires what fell between, catch_up or not
MAX_FIRINGS = 100_000  # in one range (a backfill, a catch-up): beyond it, the range is an error


def firing_times(schedule: ScheduleSettings, after: float, until: float) -> Iterator[float]:
    """The schedule's firing times t, after < t <= until, in order (Unix seconds)."""
    if schedule.every is not None:
        k = int(after // schedule.every) + 1
        while k * schedule.every <= until:
            yield k * schedule.every
            k += 1
        return
    times = croniter(schedule.cron, datetime.fromtimestamp(after, schedule.zone))
    while (t := times.get_next(float)) <= until:
        yield t


def next_firing(schedule: ScheduleSettings, now: float) -> float:
    """The first firing time after `now`."""
    if schedule.every is not None:
        return (int(now // schedule.every) + 1) * schedule.every
    return croniter(schedule.cron, datetime.fromtimestamp(now, schedule.zone)).get_next(float)


def idempotency_key(name: str, at: float) -> str:
    return f"schedule:{name}:{at:.3f}"


def render(value: Any, at: float, schedule: ScheduleSettings) -> Any:
    """The payload with `{scheduled:FORMAT}` in its strings replaced by the firing time (a
    datetime in the schedule's timezone)."""
    if isinstance(value, str):
        return value.format(scheduled=datetime.fromtimestamp(at, schedule.zone))
    if isinstance(value, dict):
        return {k: render(v, at, schedule) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, at, schedule) for v in value]
    return value


@dataclass(frozen=True)
class Firing:
    at: float
    job_id: str | None  # None: skipped (overlap = "skip" and the last job unfinished)


class Schedules(Submitter):
    """Fires, backfills and describes the configured schedules through one client."""

    def __init__(self, client: Client, settings: Settings) -> None:
        super().__init__(client, settings)
        self.schedules = settings.schedules

    def get(self, name: str) -> ScheduleSettings:
        if name not in self.schedules:
            known = ", ".join(self.schedules) or "none"
            raise ConfigError(f"unknown schedule {name!r} (configured: {known})")
        return self.schedules[name]

    def check(self) -> None:
        """Every schedule's pipeline, tier and payload (rendered for now) are sound; else one
        ConfigError line naming the schedule."""
        for name, schedule in self.schedules.items():
            try:
                payload = render(schedule.payload, time.time(), schedule)
                self.check_submission(schedule.pipeline, schedule.tier, payload)
            except (JobrunnerError, KeyError, ValueError, IndexError) as error:
                raise ConfigError(f"schedule {name}: {error}") from None

    def state(self, name: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(SCHEDULE + name).items()}

    def submit(self, name: str, at: float, tier: str | None = None) -> Job:
        """Submit the firing of `name` at `at` (at the schedule's tier unless given another);
        the job already submitted for it, if any."""
        schedule = self.get(name)
        return self.client.submit(
            schedule.pipeline,
            render(schedule.payload, at, schedule),
            tier=tier or schedule.tier,
            idempotency_key=idempotency_key(name, at),
        )

    def submit_many(self, name: str, times: list[float], tier: str | None = None) -> list[Job]:
        """Submit the firings of `name` at `times` in one batch, with the keys `submit` uses:
        a firing already submitted gives back its job, nothing new."""
        schedule = self.get(name)
        return self.client.submit_many(
            schedule.pipeline,
            [render(schedule.payload, at, schedule) for at in times],
            tier=tier or schedule.tier,
            idempotency_keys=[idempotency_key(name, at) for at in times],
        )

    def fire(self, name: str, at: float) -> Firing:
        """One firing from the scheduler: skipped while the last job runs (overlap = "skip"),
        else submitted and recorded as the last one."""
        schedule = self.get(name)
        last = self.state(name).get("last_job")
        if schedule.overlap == "skip" and last:
            record = self.client.store.get(last)
            if record is not None and not record.finished:
                log.info("schedule %s: skipped %s, job %s still runs", name, at, last)
                self.redis.hincrby(SCHEDULE + name, "skipped", 1)
                return Firing(at, None)
        self.redis.hincrby(SCHEDULE + name, "submissions", 1)  # every submit, deduplicated or not
        job = self.submit(name, at)
        self.redis.hset(SCHEDULE + name, mapping={"last_at": repr(at), "last_job": job.id})
        log.info("schedule %s: fired %s as job %s", name, at, job.id)
        return Firing(at, job.id)

    def fire_due(self, now: float) -> list[Firing]:
        """Fire every schedule's times since its watermark (within catch_up), then move it to
        `now`. A schedule seen for the first time starts from now. A failed submission leaves
        the watermark, so the next tick tries again (idempotency keys keep it to one job)."""
        fired: list[Firing] = []
        for name, schedule in self.schedules.items():
            key = SCHEDULE + name
            watermark = self.redis.hget(key, "watermark")
            if watermark is not None:
                oldest = now - schedule.catch_up_s - GRACE_TICKS * self.settings.scheduler.tick_s
                after = max(float(watermark), oldest)
                try:
                    fired += [self.fire(name, at) for at in _bounded(schedule, after, now)]
                except JobrunnerError as error:
                    log.error("schedule %s: %s; retried next tick", name, error)
                    continue
            self.redis.hset(key, "watermark", repr(now))
        return fired

    def backfill(self, name: str, start: float, end: float) -> Iterator[tuple[float, str | None]]:
        """Each firing time of `name` in [start, end] with the job id already bound to it (None
        for a gap), without submitting anything."""
        times = list(_bounded(self.get(name), start - 1e-6, end))
        keys = [idempotency_key(name, at) for at in times]
        existing = self.client.store.bound_jobs(keys)
        yield from zip(times, existing, strict=True)

    def describe(self, now: float) -> list[dict[str, Any]]:
        """Each schedule with its next and last firing and the last job's state."""
        rows = []
        for name, schedule in self.schedules.items():
            state = self.state(name)
            last_job = state.get("last_job")
            record = self.client.store.get(last_job) if last_job else None
            rows.append(
                {
                    "name": name,
                    "pipeline": schedule.pipeline,
                    "tier": schedule.tier or self.settings.default_tier,
                    "clock": f"cron {schedule.cron} {schedule.timezone}"
                    if schedule.cron
                    else f"every {schedule.every:g} s",
                    "next_at": next_firing(schedule, now),
                    "last_at": float(state["last_at"]) if "last_at" in state else None,
                    "last_job": last_job,
                    "last_state": record.state if record else None,
                    "skipped": int(state.get("skipped", 0)),
                }
            )
        return rows


def _bounded(schedule: ScheduleSettings, after: float, until: float) -> list[float]:
    times = []
    for at in firing_times(schedule, after, until):
        times.append(at)
        if len(times) > MAX_FIRINGS:
            raise ConfigError(f"over {MAX_FIRINGS} firings in one range: narrow it")
    return times
