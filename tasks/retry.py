"""Retry policies: which errors a step retries, how often, and how long it backs off.

Declared on a step (`@step(retry=RetryPolicy(...))`) or per node in a pipeline
(`{step = "transform", retry = {on = ["OSError"], max_retries = 5}}`), the node winning. A retry
goes back to the queue the step came from, so it stays in the job's tier.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    on: tuple[str, ...] = Field(
        default=("Exception",), min_length=1, description="exception class names, or a base"
    )
    max_retries: int = Field(default=3, ge=0, le=100)
    backoff_s: float = Field(default=1.0, gt=0, description="first delay; doubles each retry")
    backoff_max_s: float = Field(default=300.0, gt=0)
    jitter: bool = Field(default=True, description="spread delays over [d/2, d]: no herds")

    def matches(self, error: BaseException) -> bool:
        """Whether `error` is, or derives from, one of the named classes."""
        names = {cls.__name__ for cls in type(error).__mro__}
        return any(name in names for name in self.on)

    def delay(self, retries_done: int) -> float:
        full = min(self.backoff_max_s, self.backoff_s * 2**retries_done)
        return random.uniform(full / 2, full) if self.jitter else full

    def countdown(self, error: BaseException, retries_done: int) -> float | None:
        """Seconds until the next try, or None if `error` is not retried (any more)."""
        if retries_done >= self.max_retries or not self.matches(error):
            return None
        return self.delay(retries_done)
