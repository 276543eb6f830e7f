"""The Celery configuration, built in one place from `Settings`.

Each setting carries the reason it is set. Reference:
https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from jobrunner.config.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings dict for `settings` (whose broker_url is already resolved)."""
    limits = settings.limits
    # Redis re-delivers an unacked message once its visibility timeout passes. Workers renew the
    # timeout of every message they hold (worker/broker/leases.py): a lease, short so that a
    # crashed worker's steps come back promptly, yet a live worker's long step is never started
    # twice. Set for broker and results alike.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    visibility_timeout = settings.reliability.lease_s
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.effective_result_url,
        # JSON only: pickle in a queue is remote code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Tier queues, declared up front; publishing to anything else is an error.
        "task_queues": [Queue(name, routing_key=name) for name in settings.all_queues()],
        "task_default_queue": settings.queue(settings.default_tier),
        "task_create_missing_queues": False,
        "broker_transport_options": {
            # Poll the worker's queues in the order it was given (high, medium, low) every time,
            # instead of kombu's default round-robin, which lets low take turns with high.
            "queue_order_strategy": "priority",
            # One priority bucket per queue: the tier *is* the priority. With kombu's default
            # steps (0,3,6,9) a priority-0 message in low would be taken before a priority-3
            # message in high, inverting tiers. Flower reads these options too.
            "priority_steps": [0],
            "sep": ":",
            "visibility_timeout": visibility_timeout,
            # Look for lapsed leases often (kombu's default: every 100 s), so a crashed worker's
            # steps return within about a lease.
            "unacked_restore_interval": max(1.0, visibility_timeout / 10),
            "unacked_restore_throttle": 1,
            # A broker cut off without a closed connection (a partition): a command waits at
            # most a lease (30 s at least: a busy broker is not a dead one) instead of forever,
            # and a silent BRPOP is dropped and reconnected within about two leases (kombu's
            # default check: 51 s).
            # https://docs.celeryq.dev/projects/kombu/en/stable/reference/kombu.transport.redis.html
            "socket_timeout": max(30.0, visibility_timeout),
            "health_check_interval": min(25, visibility_timeout),
        },
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout},
        # Every message gets the same priority; never let a per-message value reorder tiers.
        "task_default_priority": 0,
        # Ack after the step ran, so a message a worker holds is one it is running ...
        "task_acks_late": True,
        # ... and if its process dies (OOM kill, segfault), put the message back rather than
        # failing it; jobrunner counts deliveries, dead-letters poison (worker/store/deliveries.py).
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#task-reject-on-worker-lost
        "task_reject_on_worker_lost": True,
        # ... and reserve no more than one message per process: a reserved low message cannot
        # be reordered, so a high job arriving later would wait behind it.
        "worker_prefetch_multiplier": 1,
        # Redis only (Celery 5.7): never hold more messages than free processes, autoscaled too.
        "worker_disable_prefetch": True,
        # Task events cost a worker one Redis PUBLISH per event, three per step: about a quarter
        # of its CPU per short step (`jobrunner bench`), for nobody when nothing watches. So
        # workers send them while Flower runs: Flower turns them on in every worker at start and
        # every few seconds after (its enable_events option). `jobrunner status` and the
        # exporter read job records, not events. Clients always send task-sent events, so Flower
        # knows a job's first step from the moment it is queued; a worker's pool processes send
        # theirs (a chain's next link, a fan-out's members) while Flower watches, as the other
        # task events (worker/runtime/sent_events.py). task_track_started stays off.
        # https://docs.celeryq.dev/en/stable/userguide/monitoring.html#events
        "worker_send_task_events": False,
        "task_send_sent_event": True,
        # Result writes retry a lost connection with backoff (off by default, so a broker
        # restart would fail steps that already ran).
        # https://docs.celeryq.dev/en/stable/userguide/configuration.html#result-backend-always-retry
        "result_backend_always_retry": True,
        "result_backend_max_retries": 20,
        # Store task name, args and worker with each result, for the job's step tree.
        "result_extended": True,
        "result_expires": limits.result_expires,
        "task_soft_time_limit": limits.step_soft_time_limit,
        "task_time_limit": limits.step_time_limit,
        # Keep retrying the broker at start-up (and say so) instead of dying on a slow Redis.
        "broker_connection_retry_on_startup": True,
        # A publish during a broker restart waits for it (about 20 s) instead of failing at once.
        "task_publish_retry_policy": {
            "max_retries": 10,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 3.0,
        },
    }
