"""Hooks around every job task, in the style of Dramatiq middleware.

The runtime (worker/) installs middleware; tasks/ only calls it. Hooks run inside the task call,
so `after_failure` runs *before* Celery stores the failure and fires chord callbacks: a chord's
error callback sees every member's failure already recorded.
"""

from __future__ import annotations

from typing import Any


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


_INSTALLED: list[Middleware] = []


def install(middleware: Middleware) -> None:
    """Add `middleware` once (by type); hooks run in installation order."""
    if not any(type(m) is type(middleware) for m in _INSTALLED):
        _INSTALLED.append(middleware)


def installed() -> tuple[Middleware, ...]:
    return tuple(_INSTALLED)
