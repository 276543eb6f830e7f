"""Waiting for a condition in tests: poll until true, or fail after a generous timeout (a guard
against hangs, not a timed assertion)."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout_s: float = 30, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s:g} s"
        time.sleep(every_s)
