"""`jobrunner status`: tiers (depth, oldest wait), workers (concurrency, headroom, admission),
firing alerts and recent failures; or one job's record with its step tree.

The step tree is the pipeline's declared shape (chain / group / chord / map) with, on each step,
the runs recorded as its tasks ended (worker/runtime/tracking.py): outcome, worker, wait
and run time. Celery's result backend is not used (steps store no results there).
"""

from __future__ import annotations

import time
from typing import Any

from jobrunner.tasks.builtin import COLLECT_TASK, FAN_OUT_TASK, START_TASK
from jobrunner.tasks.pipeline import ChainNode, ChordNode, GroupNode, MapNode, Node, StepNode
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.keys import DEAD_LETTERS, JOBS
from jobrunner.worker.broker.queues import by_tier, queue_stats
from jobrunner.worker.client import Client
from jobrunner.worker.monitoring import alerts
from jobrunner.worker.store import heartbeat, step_stats
from jobrunner.worker.store.control import PauseStore
from jobrunner.worker.store.dead_letters import DeadLetterStore

RECENT_JOBS = 10
RECENT_FAILURES = 5
PLUMBING = {START_TASK: "start", COLLECT_TASK: "collect", FAN_OUT_TASK: "map"}


def overview() -> dict[str, Any]:
    client = Client()
    settings = client.settings
    connection.check_reachable(settings)
    redis = connection.client(settings.broker_url)
    results = client.store.redis
    stats = queue_stats(redis, settings)
    paused = PauseStore(redis).paused()
    tiers = [
        {
            "tier": tier,
            "queues": [s.queue for s in stats if s.tier == tier],
            "depth": depth,
            "oldest_age_s": age,
            "paused": paused.get(tier),  # {by, at, queues} while paused
        }
        for tier, (depth, age) in by_tier(stats).items()
    ]
    workers = [_worker_row(beat) for beat in heartbeat.read_all(results)]
    recent_ids = [i.decode() for i in results.zrevrange(JOBS, 0, RECENT_JOBS - 1)]
    recent = [client.store.get(job_id) for job_id in recent_ids]  # payloads not opened
    letters = DeadLetterStore(results, client.store.cipher)
    failed_ids = [i.decode() for i in results.zrevrange(DEAD_LETTERS, 0, RECENT_FAILURES - 1)]
    entries = [letters.summary(job_id) for job_id in failed_ids]  # payloads not opened
    return {
        "tiers": tiers,
        "paused_pipelines": {
            name.removeprefix("pipeline:"): entry
            for name, entry in paused.items()
            if name.startswith("pipeline:")
        },
        "workers": workers,
        "alerts": alerts.firing(results),
        "recent_failures": [entry for entry in entries if entry is not None],
        "recent_jobs": [_job_row(r) for r in recent if r is not None],
        "payloads": (
            "encrypted at rest (security.payload_key)"
            if client.store.cipher.enabled
            else "stored in clear (set security.payload_key to encrypt them)"
        ),
    }


def _worker_row(beat: dict[str, str]) -> dict[str, Any]:
    """A worker's heartbeat, typed: what it runs, its headroom, and whether it admits work."""
    numbers = (
        "processes",
        "min_processes",
        "max_processes",
        "running",
        "held",
        "cpus",
        "memory_total_mb",
        "memory_available_mb",
        "memory_reserve_mb",
    )
    row: dict[str, Any] = {key: beat.get(key) for key in ("node", "pool", "state")}
    row.update({key: int(beat[key]) for key in numbers if beat.get(key)})
    row["headroom_mb"] = row.get("memory_available_mb", 0) - row.get("memory_reserve_mb", 0)
    row["load_per_cpu"] = float(beat.get("load_per_cpu") or 0)
    row["cpu_percent"] = float(beat.get("cpu_percent") or 0)
    row["age_s"] = round(time.time() - float(beat.get("updated_at") or 0), 1)
    return row


def _job_row(record: Any) -> dict[str, Any]:
    return {
        "id": record.id,
        "pipeline": record.pipeline,
        "tier": record.tier,
        "state": record.state,
        "wait_s": record.wait_s,
        "run_s": record.run_s,
        "error": record.error,
    }


def _runs(client: Client, job_id: str) -> list[dict[str, Any]]:
    """Every task run of the job (each attempt of a retried step too), oldest first, with its
    state, worker, wait and run time."""
    runs = []
    for entry in sorted(client.store.steps(job_id), key=lambda e: e["started_at"]):
        queued = entry.get("queued_at")
        run = {
            "task_id": entry["task_id"],
            "step": PLUMBING.get(entry.get("task") or "", entry["step"]),
            "state": entry["state"],
            "worker": entry.get("worker"),
            "retries": entry.get("retries", 0),
            "wait_s": round(entry["started_at"] - queued, 3) if queued else None,
            "run_s": round(entry["finished_at"] - entry["started_at"], 3),
        }
        if entry.get("error"):
            run["error"] = entry["error"]
        if entry.get("cached"):  # its output was reused from an earlier run's
            run["cached"] = True
        runs.append(run)
    return runs


class _Assigner:
    """Hands each declared step its runs: in declaration order, earliest task first, each task
    with all its attempts."""

    def __init__(self, runs: list[dict[str, Any]]) -> None:
        self.left = list(runs)

    def take(self, step: str, *, every: bool) -> list[dict[str, Any]]:
        mine = [run for run in self.left if run["step"] == step]
        if not every and mine:  # one task, with every attempt of it (retries keep its id)
            mine = [run for run in mine if run["task_id"] == mine[0]["task_id"]]
        taken = mine
        self.left = [run for run in self.left if run not in taken]
        return taken

    def tree(self, node: Node, *, mapped: bool = False) -> dict[str, Any]:
        """A node of the declared flow with its runs; inside a map, a step takes all its runs."""
        match node:
            case StepNode(step=name):
                return {"kind": "step", "step": name, "runs": self.take(name, every=mapped)}
            case ChainNode(chain=children):
                return {
                    "kind": "chain",
                    "children": [self.tree(c, mapped=mapped) for c in children],
                }
            case GroupNode(group=children):
                members = [self.tree(c, mapped=mapped) for c in children]
                return {"kind": "group", "members": members, "join": self._join(mapped)}
            case ChordNode(chord=children, then=then):
                members = [self.tree(c, mapped=mapped) for c in children]
                join = self._join(mapped)
                return {
                    "kind": "chord",
                    "members": members,
                    "join": join,
                    "then": self.tree(then, mapped=mapped),
                }
            case MapNode(map=child):
                fan_out = self.take("map", every=mapped)
                each = self.tree(child, mapped=True)
                return {"kind": "map", "fan_out": fan_out, "each": each, "join": self._join(mapped)}
        raise AssertionError(f"unhandled node {node!r}")

    def _join(self, mapped: bool) -> list[dict[str, Any]]:
        return self.take("collect", every=mapped)


def step_tree(client: Client, job_id: str, pipeline: str) -> dict[str, Any]:
    """The job's declared flow with each step's runs; runs matching no declared step (a pipeline
    this process does not load, or plumbing) are listed under `other`."""
    assigner = _Assigner(_runs(client, job_id))
    start = assigner.take("start", every=False)
    declared = client.pipelines.get(pipeline)
    flow = assigner.tree(declared.flow) if declared is not None else None
    return {"start": start, "flow": flow, "other": assigner.left}


def job_status(job_id: str) -> dict[str, Any]:
    client = Client()
    record = client.job(job_id).record()
    data = record.as_dict()
    data.update(
        wait_s=record.wait_s, run_s=record.run_s, age_s=round(time.time() - record.submitted_at, 3)
    )
    data["steps"] = step_tree(client, job_id, record.pipeline)
    data["metrics"] = step_stats.reported(client.store.redis, job_id)  # what ctx.metric reported
    return data
