"""jobrunner: a priority job runner for data and ML pipelines on Celery and Redis.

    from jobrunner import Client
    job = Client().submit("features", {"output_name": "today"}, tier="high")
    print(job.result(timeout=60))

Everything an application needs is importable from here; importing starts and connects to
nothing. Workers and plain Celery tooling find the Celery app as `celery -A jobrunner`
(jobrunner/celery.py); `python -m jobrunner` is the `jobrunner` command.
"""

from importlib.metadata import PackageNotFoundError, version

from jobrunner.config import ConfigError, JobrunnerError, Settings, get_settings
from jobrunner.tasks.errors import PayloadError, PipelineError
from jobrunner.tasks.middleware import Middleware
from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import register_pipeline
from jobrunner.tasks.retry import RetryPolicy
from jobrunner.tasks.step import StepContext, StepPayload, step
from jobrunner.worker.app import create_app
from jobrunner.worker.client import Client, Job, JobError
from jobrunner.worker.store.jobs import JobRecord

try:
    __version__ = version("jobrunner")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Client",
    "ConfigError",
    "Job",
    "JobError",
    "JobRecord",
    "JobrunnerError",
    "Middleware",
    "PayloadError",
    "Pipeline",
    "PipelineError",
    "RetryPolicy",
    "Settings",
    "StepContext",
    "StepPayload",
    "__version__",
    "create_app",
    "get_settings",
    "register_pipeline",
    "step",
]
