"""Config tests start from a clean slate: no JOBRUNNER_* variable from the caller's environment,
and a fresh settings cache before and after each test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from jobrunner.config.settings import get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("JOBRUNNER_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
