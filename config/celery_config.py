"""The Celery configuration, built in one place from `Settings`.

Each setting carries the reason it is set. Reference:
https://docs.celeryq.dev/en/stable/userguide/configuration.html
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from config.settings import Settings

# Step modules every process loads: the built-in canvas tasks and the sample pipeline steps.
CORE_TASK_MODULES = ("tasks.builtin", "tasks.features")


def celery_config(settings: Settings) -> dict[str, Any]:
    """Return the Celery settings dict for `settings` (whose broker_url is already resolved)."""
    limits = settings.limits
    # Redis re-delivers an unacked message after this many seconds: it must outlast the longest
    # step, or a running step is started a second time. Set for broker and results alike.
    # https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
    visibility_timeout = limits.step_time_limit + 300
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
        },
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout},
        # Every message gets the same priority; never let a per-message value reorder tiers.
        "task_default_priority": 0,
        # Ack after the step ran, so a message a worker holds is one it is running ...
        "task_acks_late": True,
        # ... and reserve no more than one message per process: a reserved low message cannot
        # be reordered, so a high job arriving later would wait behind it.
        "worker_prefetch_multiplier": 1,
        # Redis only (Celery 5.7): never hold more messages than free processes, autoscaled too.
        "worker_disable_prefetch": True,
        # Flower and `jobrunner status` see every step from the moment it is sent.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        # Store task name, args and worker with each result, for the job's step tree.
        "result_extended": True,
        "result_expires": limits.result_expires,
        "task_soft_time_limit": limits.step_soft_time_limit,
        "task_time_limit": limits.step_time_limit,
        # Keep retrying the broker at start-up (and say so) instead of dying on a slow Redis.
        "broker_connection_retry_on_startup": True,
        "imports": [*CORE_TASK_MODULES, *settings.imports],
    }
