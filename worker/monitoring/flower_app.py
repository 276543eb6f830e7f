"""The Celery app as `jobrunner flower` runs it: `jobrunner.celery`'s, reached through a plain
`redis://` broker URI.

Flower's Broker tab picks its Redis client by the scheme of the app's broker URI and knows only
`redis://` (and `rediss://`); with `broker_transport` naming our reliable-fetch transport
(worker/broker/transport.py) the URI becomes `jobrunner.worker.broker.transport:Transport://...`
and the tab answers 404.
Here, in the Flower process only, the `redis` scheme itself resolves to that transport, so Flower
publishes exactly as clients do (with wake tokens) and its Broker tab reads the tier queues.

Flower (2.2, read) serves `/metrics` (task and worker names, counts) without asking for credentials,
although every other view asks (its Metrics handler lacks tornado's `authenticated`); here it
gets the same guard, so it answers 401 without them (`require_auth_for_metrics`, checked by
tests/worker/monitoring/test_flower.py). `/healthcheck` stays open: it says "OK" and nothing else.

Workers send task events only while watched (config/celery_config.py): Flower turns them on
every few seconds, first a few seconds after it starts; it is asked once at start too, so the
running workers' steps show from Flower's first moment.
"""

from __future__ import annotations

import logging

from flower.views.monitor import Metrics
from tornado.web import authenticated

from jobrunner.config import get_settings
from jobrunner.worker.app import create_app
from jobrunner.worker.broker.connection import resolve
from jobrunner.worker.broker.transport import serve_redis_schemes


def require_auth_for_metrics() -> None:
    """Guard Flower's `/metrics` as its other views are guarded (once per process)."""
    if not getattr(Metrics.get, "jobrunner_guarded", False):
        Metrics.get = authenticated(Metrics.get)
        Metrics.get.jobrunner_guarded = True  # type: ignore[attr-defined]


require_auth_for_metrics()
app = create_app(resolve(get_settings()))

TRANSPORT = app.conf.broker_transport
if TRANSPORT:
    serve_redis_schemes(TRANSPORT)
    app.conf.broker_transport = None

try:
    app.control.enable_events()
except Exception as error:  # Flower itself reports an unreachable broker, more clearly
    logging.getLogger("jobrunner.flower").warning("could not turn on task events: %s", error)

__all__ = ["app"]
