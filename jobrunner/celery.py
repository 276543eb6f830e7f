"""The Celery app of workers, Flower and plain Celery tooling: `celery -A jobrunner ...`.

Celery finds it here by name (`-A jobrunner` looks for `jobrunner.celery`). Importing this
module reads the settings and connects to nothing; `import jobrunner` does not import it.
"""

from __future__ import annotations

from jobrunner.config import get_settings
from jobrunner.worker.app import create_app
from jobrunner.worker.broker.connection import resolve
from jobrunner.worker.monitoring import logs

app = create_app(resolve(get_settings()))
logs.connect_celery(get_settings())  # Celery's own log lines in the configured format

__all__ = ["app"]
