"""The Celery app factory: `create_app(settings)` builds and configures one Celery app.

Everything jobrunner hooks into Celery is installed here, on the app it returns, rather than as
a side effect of importing a module: the consumer bootsteps, the autoscaler, the result backend,
the job middleware and the publish hook. Runtime pieces are named by their dotted path, as
Celery's own configuration does, so this module imports nothing above the store layer; Celery
loads them in the worker only.

Workers, Flower and plain Celery tooling use the app of `jobrunner.celery`
(`celery -A jobrunner inspect ping`); a `Client` builds its own and never touches the
process's current app.
"""

from __future__ import annotations

import click
from celery import Celery
from celery.signals import before_task_publish

from jobrunner.config import Settings
from jobrunner.config.celery_config import celery_config
from jobrunner.tasks.cache import CACHE_SETTING
from jobrunner.tasks.middleware import MIDDLEWARE_SETTING
from jobrunner.tasks.registry import BUILTIN_STEP_MODULES
from jobrunner.worker.broker.queues import stamp_queued_at

# What `celery -A` names to find the workers' app (jobrunner/celery.py).
CELERY_APP = "jobrunner"
TRANSPORT = "jobrunner.worker.broker.transport:Transport"
BACKEND_CLASS = "jobrunner.worker.runtime.result_backend:JobResultBackend"
AUTOSCALER_CLASS = "jobrunner.worker.runtime.autoscaler:HeadroomAutoscaler"
# The consumer bootsteps, one concern each (worker/runtime/consumer/).
CONSUMER_STEPS = tuple(
    f"jobrunner.worker.runtime.consumer.{name}"
    for name in (
        "admission:AdmissionStep",
        "heartbeat:HeartbeatStep",
        "leases:LeaseStep",
        "deadlines:DeadlineStep",
        "starvation:StarvationStep",
        "cache_prune:CachePruneStep",
    )
)
# Hooks around every job task, in order (see tasks/middleware.py).
# Step metrics and traces come first: a run's figures and spans are recorded before tracking
# finishes its job.
MIDDLEWARE = (
    "jobrunner.worker.monitoring.step_metrics:StepMetrics",
    "jobrunner.worker.monitoring.tracing:Tracing",
    "jobrunner.worker.runtime.tracking:JobTracking",
)
# Where cached steps keep their entries (tasks/cache.py).
STEP_CACHE = "jobrunner.worker.store.step_cache:open_step_cache"
# Task modules every worker loads: the built-in steps, and the submission task through which
# Flower's HTTP API enqueues jobs.
TASK_MODULES = (*BUILTIN_STEP_MODULES, "jobrunner.worker.runtime.remote_submit")


def create_app(settings: Settings, *, set_as_current: bool = True) -> Celery:
    """A Celery app configured from `settings` (whose broker_url is already resolved).

    Pass `set_as_current=False` for an app that must not become the process's current app,
    e.g. a client's inside someone else's Celery application."""
    app = Celery("jobrunner", set_as_current=set_as_current)
    config = celery_config(settings)
    config["imports"] = [*TASK_MODULES, *settings.imports]
    # kombu's Redis transport with a reliable fetch: a message leaves its queue only in the same
    # atomic step that records it unacknowledged, so a worker killed (or a connection dropped)
    # mid-fetch cannot lose it (celery/kombu#1733). Same URLs, same options.
    config["broker_transport"] = TRANSPORT
    config["worker_autoscaler"] = AUTOSCALER_CLASS
    config[MIDDLEWARE_SETTING] = list(MIDDLEWARE)
    config[CACHE_SETTING] = STEP_CACHE
    if settings.broker_url:
        config["result_backend"] = f"{BACKEND_CLASS}+{config['result_backend']}"
    else:  # leave Celery's own default alone; entry points check for a broker first
        del config["broker_url"], config["result_backend"]
    app.conf.update(config)
    app.steps["consumer"].update(CONSUMER_STEPS)
    app.user_options["worker"].add(
        click.Option(["--jobrunner-pool"], default=None, help="the jobrunner pool this worker runs")
    )
    # Celery's publish signal is process-wide; one dispatch_uid keeps it connected once however
    # many apps a process builds.
    before_task_publish.connect(stamp_queued_at, weak=False, dispatch_uid="jobrunner.queued_at")
    return app
