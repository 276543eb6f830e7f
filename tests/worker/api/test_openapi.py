"""The OpenAPI reference on the docs site (docs/openapi.json) is the app's own document: it is
regenerated with `make openapi`, and this test fails when a route changed without it."""

from __future__ import annotations

import json

import pytest

from jobrunner.config import get_settings
from jobrunner.worker.api.app import create_api
from tests.conftest import ROOT

REFERENCE = ROOT / "docs" / "openapi.json"


def test_docs_hold_the_current_openapi_document(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", "redis://127.0.0.1:1/0")  # never connected to
    get_settings.cache_clear()
    try:
        document = create_api(get_settings()).openapi()
    finally:
        get_settings.cache_clear()
    assert json.loads(REFERENCE.read_text()) == document, "run `make openapi`"
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/events"} <= set(document["paths"])
