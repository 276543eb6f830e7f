"""Traces on a real worker exporting to a real OTLP/HTTP receiver (tests/fixtures/otlp.py): one
job of the features pipeline is one trace, its id the job id, with the root span from
submission to the outcome and every step run (each mapped partition's too) a child of it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from jobrunner.worker.client import Client
from tests.conftest import Workers
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan
from tests.support import metric_steps  # noqa: F401 - registers the `measured` pipeline
from tests.support.polling import eventually
from tests.support.sample_data import sample_files

pytestmark = pytest.mark.integration

NODE = "general-tracing@test"


@pytest.fixture(scope="module")
def traced(workers: Workers, otlp_receiver: OtlpReceiver) -> OtlpReceiver:
    workers.start(
        "general",
        NODE,
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="2",
        JOBRUNNER_TRACING__ENDPOINT=otlp_receiver.url,
        JOBRUNNER_TRACING__HEADERS=f"Authorization=Bearer {otlp_receiver.token}",
        OTEL_BSP_SCHEDULE_DELAY="100",  # export within 0.1 s rather than the default 5 s
        JOBRUNNER_LOGGING__FORMAT="json",
        JOBRUNNER_IMPORTS="tests.support.steps,tests.support.metric_steps",
    )
    return otlp_receiver


def _root(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [span for span in spans if not span.parent_id]


def test_one_features_job_is_one_trace_with_the_expected_span_tree(
    traced: OtlpReceiver, client: Client
) -> None:
    job = client.submit("features", {"output_name": "traced"}, tier="high")
    assert job.wait(120).state == "SUCCESS"
    partitions = len(sample_files())
    expected = Counter(
        {
            "ingest": 1,
            "map": 1,
            "validate": partitions,
            "transform": partitions,
            "collect": 1,
            "aggregate": 1,
            "store": 1,
        }
    )

    def children() -> Counter[str]:
        return Counter(span.name for span in traced.trace(job.id) if span.parent_id)

    eventually(lambda: children() == expected and _root(traced.trace(job.id)), timeout_s=30)
    spans = traced.trace(job.id)
    (root,) = _root(spans)
    assert root.name == "job features" and root.service == "jobrunner"
    assert root.attributes["jobrunner.outcome"] == "succeeded" and not root.error
    record = job.record()
    assert abs(root.start_ns / 1e9 - record.submitted_at) < 0.01  # from submission ...
    for span in spans:
        if span is root:
            continue
        assert span.parent_id == root.span_id  # every step run is a child of the root
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns  # ... to the outcome
        assert span.attributes["jobrunner.job_id"] == job.id
        assert span.attributes["jobrunner.worker"] == NODE
        assert span.attributes["jobrunner.queue_wait_s"] >= 0
    assert traced.refused == 0  # the exporter sent the configured bearer token


def test_a_failed_step_and_its_job_are_errors_and_jobs_get_their_own_traces(
    traced: OtlpReceiver, client: Client
) -> None:
    ok, bad = client.submit("chain3", {"start": 1}), client.submit("fails")
    assert ok.wait(60).state == "SUCCESS" and bad.wait(60).state == "FAILURE"
    eventually(lambda: bool(_root(traced.trace(ok.id)) and _root(traced.trace(bad.id))))
    (root,) = _root(traced.trace(bad.id))
    assert root.error and root.attributes["jobrunner.outcome"] == "failed"
    failed = [span for span in traced.trace(bad.id) if span.error and span.parent_id]
    assert [span.name for span in failed] == ["explode"]
    assert {span.trace_id for span in traced.trace(ok.id)} == {ok.id}


def test_a_step_s_log_lines_carry_its_trace_id(
    traced: OtlpReceiver, client: Client, workers: Workers
) -> None:
    job = client.submit("measured", {})
    assert job.wait(60).state == "SUCCESS"
    lines = (workers.log_dir / f"{NODE}.log").read_text().splitlines()
    (own,) = [json.loads(line) for line in lines if '"logger": "tests.measured"' in line]
    assert own["trace_id"] == job.id == own["job_id"]


def test_a_pool_process_flushes_its_spans_before_it_ends(
    workers: Workers, otlp_receiver: OtlpReceiver, client: Client, traced: OtlpReceiver
) -> None:
    """With a batch delay no test waits for, spans reach the receiver only because each pool
    process flushes when Celery ends it (contrib#4916), here at a warm shutdown."""
    slow = workers.start(
        "general",
        "general-tracing-flush@test",
        JOBRUNNER_POOLS__GENERAL__CONCURRENCY="1",
        JOBRUNNER_TRACING__ENDPOINT=otlp_receiver.url,
        JOBRUNNER_TRACING__HEADERS=f"Authorization=Bearer {otlp_receiver.token}",
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    traced_node = [p for p in workers.processes if p is not slow]
    for process in traced_node:  # only the slow-exporting worker may run the job
        process.terminate()
        process.wait(timeout=60)
    job = client.submit("chain3", {"start": 1})
    assert job.wait(60).state == "SUCCESS"
    assert not traced.trace(job.id)
    slow.terminate()
    assert slow.wait(timeout=60) == 0
    eventually(lambda: len(traced.trace(job.id)) == 4)  # the root and three steps
