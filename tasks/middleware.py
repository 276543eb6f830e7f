"""Hooks around every job task, in the style of Dramatiq middleware.

The app names its middleware in its configuration (`jobrunner_middleware`, dotted paths set by
`jobrunner.worker.app.create_app`); tasks/ only calls it, and never imports the runtime that
implements it. Hooks run inside the task call, so `after_failure` runs *before* Celery stores
the failure and fires chord callbacks: a chord's error callback sees every member's failure
already recorded.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from celery import Celery
from celery.utils.imports import symbol_by_name

MIDDLEWARE_SETTING = "jobrunner_middleware"


class Middleware:
    """Override the hooks you need; each receives the job context of the running task."""

    def before_task(self, job: dict[str, Any]) -> None:
        """The task is about to run."""

    def after_success(self, job: dict[str, Any], result: Any) -> None:
        """The task returned `result`."""

    def after_failure(self, job: dict[str, Any], error: BaseException) -> None:
        """The task raised `error` and will not be retried (nor was it replaced)."""

    def after_retry(self, job: dict[str, Any], error: BaseException) -> None:
        """The task raised `error` and its retry policy sends it round again."""


_LOADED: WeakKeyDictionary[Celery, tuple[Middleware, ...]] = WeakKeyDictionary()


def installed(app: Celery) -> tuple[Middleware, ...]:
    """The middleware `app` names, instantiated once per app, in the order named."""
    loaded = _LOADED.get(app)
    if loaded is None:
        names = app.conf.get(MIDDLEWARE_SETTING) or ()
        loaded = _LOADED[app] = tuple(symbol_by_name(name)() for name in names)
    return loaded
