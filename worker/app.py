"""The Celery app, importable as `worker.app:app` so plain Celery tooling works:
`celery -A worker.app inspect ping`, `celery -A worker.app flower`.

Importing it reads the settings and connects to nothing.
"""

from __future__ import annotations

import click
from celery import Celery

from config import Settings, get_settings
from config.celery_config import celery_config
from worker.broker import resolve

# Named, not imported: Celery loads them in the worker only, after the app exists.
BACKEND_CLASS = "worker.result_backend:JobResultBackend"
AUTOSCALER_CLASS = "worker.autoscaler:HeadroomAutoscaler"
CONSUMER_STEP = "worker.bootstep:JobrunnerStep"

# Runtime modules the worker (and Flower) load besides the steps: the job tracking hooks, and
# the submission task through which Flower's HTTP API enqueues jobs.
RUNTIME_TASK_MODULES = ("worker.middleware.job_tracking", "worker.remote_submit")


def configure(app: Celery, settings: Settings) -> None:
    """(Re)apply `settings`, e.g. once the embedded Redis is up and its URL is known."""
    config = celery_config(settings)
    config["imports"] = [*config["imports"], *RUNTIME_TASK_MODULES]
    config["worker_autoscaler"] = AUTOSCALER_CLASS
    if settings.broker_url:
        config["result_backend"] = f"{BACKEND_CLASS}+{config['result_backend']}"
    else:  # leave Celery's own default alone; entry points check for a broker first
        del config["broker_url"], config["result_backend"]
    app.conf.update(config)


app = Celery("jobrunner")
configure(app, resolve(get_settings()))
# Admission control, heartbeat and starvation guard in every worker (worker/bootstep.py).
app.steps["consumer"].add(CONSUMER_STEP)
app.user_options["worker"].add(
    click.Option(["--jobrunner-pool"], default=None, help="the jobrunner pool this worker runs")
)
