"""Data-arrival triggers: files that arrive (or change) in a watched folder start one job per
batch, the batch's paths in the payload.

On each scheduler tick every trigger's folder is scanned. A file is identified by its path, size
and modification time; one whose pair differs from what was last submitted for that path is new.
A new file must keep the same size and mtime for `settle_s` (one still being written keeps
changing, so it waits); once settled it joins the batch, which is submitted `batch_s` after its
first file settled. The submitted pairs are remembered in Redis, so a restarted scheduler never
submits a file again; the idempotency key is made from the batch's pairs, so a scheduler killed
between submitting and remembering gets the first job back.

`watch` may be an object store prefix (s3://bucket/incoming, gs://, az://): its listing is polled
the same way, an object identified by its URL, size and ETag (or version). An object store
writes an object whole, so settling there only waits out a producer that overwrites it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from jobrunner.config import ConfigError, JobrunnerError, Settings
from jobrunner.config.settings import TriggerSettings
from jobrunner.tasks.features.objects import open_root
from jobrunner.tasks.features.paths import local_path
from jobrunner.worker.broker.keys import TRIGGER
from jobrunner.worker.client import Client, Job
from jobrunner.worker.scheduling.base import Submitter

log = logging.getLogger("jobrunner.scheduler")


def scan(trigger: TriggerSettings) -> dict[str, str]:
    """Each file matching the trigger's pattern -> "size:mtime_ns"; on an object store, each
    object's URL -> "size:stamp" (its ETag or version: a listing has no trustworthy mtime)."""
    folder = local_path(trigger.watch)
    if folder is None:
        root = open_root(trigger.watch)
        return {root.where(o.name): f"{o.size}:{o.stamp}" for o in root.glob(trigger.pattern)}
    found = {}
    for path in folder.glob(trigger.pattern):
        try:
            stat = path.stat()
        except OSError:  # gone between the listing and the stat
            continue
        if path.is_file():
            found[str(path)] = f"{stat.st_size}:{stat.st_mtime_ns}"
    return found


class Triggers(Submitter):
    def __init__(self, client: Client, settings: Settings) -> None:
        super().__init__(client, settings)
        self.triggers = settings.triggers

    def payload(self, trigger: TriggerSettings, files: list[str]) -> dict[str, Any]:
        return {**trigger.payload, trigger.files_field: files}

    def check(self) -> None:
        """Every trigger's folder, pipeline, tier and payload are sound; else one line."""
        for name, trigger in self.triggers.items():
            try:
                folder = local_path(trigger.watch)
                if folder is None:
                    scan(trigger)  # the store answers: bucket, credentials, endpoint
                elif not folder.is_dir():
                    raise ConfigError(f"watch {trigger.watch} is not a folder")
                self.check_submission(trigger.pipeline, trigger.tier, self.payload(trigger, []))
            except JobrunnerError as error:
                raise ConfigError(f"trigger {name}: {error}") from None

    def poll(self, now: float) -> list[Job]:
        """Scan every trigger once; the jobs submitted."""
        jobs = []
        for name, trigger in self.triggers.items():
            try:
                job = self._poll(name, trigger, now)
            except (JobrunnerError, OSError) as error:
                log.error("trigger %s: %s; retried next tick", name, error)
                continue
            if job is not None:
                jobs.append(job)
        return jobs

    def _poll(self, name: str, trigger: TriggerSettings, now: float) -> Job | None:
        base = TRIGGER + name
        found = scan(trigger)
        seen = {k.decode(): v.decode() for k, v in self.redis.hgetall(base + ":seen").items()}
        pending = {
            k.decode(): json.loads(v) for k, v in self.redis.hgetall(base + ":pending").items()
        }
        changed = {path: pair for path, pair in found.items() if seen.get(path) != pair}
        settled, waiting = {}, {}
        for path, pair in changed.items():
            entry = pending.get(path)
            if entry is None or entry["pair"] != pair:  # new, or still being written
                entry = {"pair": pair, "since": now}
            waiting[path] = entry
            if now - entry["since"] >= trigger.settle_s:
                settled[path] = pair
        with self.redis.pipeline() as pipe:
            pipe.delete(base + ":pending")
            if waiting:
                pipe.hset(base + ":pending", mapping={p: json.dumps(e) for p, e in waiting.items()})
            pipe.execute()
        if not settled:
            self.redis.hdel(base, "batch_since")
            return None
        since = float(self.redis.hget(base, "batch_since") or now)
        if now - since < trigger.batch_s:
            self.redis.hsetnx(base, "batch_since", repr(since))
            return None
        return self._submit(name, trigger, settled)

    def _submit(self, name: str, trigger: TriggerSettings, batch: dict[str, str]) -> Job:
        files = sorted(batch)
        digest = hashlib.sha256(json.dumps(sorted(batch.items())).encode()).hexdigest()[:40]
        job = self.client.submit(
            trigger.pipeline,
            self.payload(trigger, files),
            tier=trigger.tier,
            idempotency_key=f"trigger:{name}:{digest}",
        )
        base = TRIGGER + name
        with self.redis.pipeline() as pipe:
            pipe.hset(base + ":seen", mapping=batch)
            pipe.hdel(base + ":pending", *files)
            pipe.hdel(base, "batch_since")
            pipe.hset(base, "last_job", job.id)
            pipe.execute()
        log.info("trigger %s: %d file(s) as job %s", name, len(files), job.id)
        return job
