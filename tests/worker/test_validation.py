"""Payload, idempotency-key, deadline and job-id checks on a real Redis: what JSON cannot carry
unchanged is refused with one line and nothing is written or enqueued."""

from __future__ import annotations

import pytest
import redis

from jobrunner.config import TIERS, get_settings
from jobrunner.tasks.errors import PayloadError
from jobrunner.worker.broker.keys import JOBS
from jobrunner.worker.client import Client
from jobrunner.worker.validation import parse_json
from tests.support.cli import run

pytestmark = pytest.mark.integration


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _nothing_written(redis_client: redis.Redis) -> bool:
    queues = [get_settings().queue(tier) for tier in TIERS]
    return redis_client.zcard(JOBS) == 0 and sum(map(redis_client.llen, queues)) == 0


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"tag": "/tmp/\ud800"}, "not valid UTF-8 (a lone surrogate)"),
        ({"tag": "x", "sleep_ms": float("nan")}, "holds nan"),
        ({"tag": "x", "sleep_ms": float("inf")}, "holds inf"),
        ({"tag": _nested(10_000)}, "nested deeper than 32 levels"),
        ({"sleep_ms": 10**5000}, "integer longer than 64 digits"),
        ({"tag": b"bytes"}, "holds a bytes"),
        ({1: "x"}, "object key that is not a string"),
        ({"sleep_ms": "nan"}, "sleep_ms"),  # the model's own check: an int
    ],
    ids=["surrogate", "nan", "infinity", "deep", "long-number", "bytes", "int-key", "nan-text"],
)
def test_what_json_cannot_carry_is_refused_with_one_line(
    client: Client, redis_client: redis.Redis, payload: dict[str, object], error: str
) -> None:
    redis_client.delete(JOBS)
    with pytest.raises(PayloadError, match="payload for sleepy") as raised:
        client.submit("sleepy", payload, tier="low")
    assert error in str(raised.value) and "\n" not in str(raised.value)
    assert _nothing_written(redis_client)


def test_an_idempotency_key_matches_in_full_and_binds_its_payload(
    client: Client, redis_client: redis.Redis
) -> None:
    with pytest.raises(PayloadError, match="idempotency key must match"):
        client.submit("chain3", {"start": 1}, tier="low", idempotency_key="key\n")
    first = client.submit("chain3", {"start": 1}, tier="low", idempotency_key="same-key")
    again = client.submit("chain3", {"start": 1}, tier="low", idempotency_key="same-key")
    assert again.id == first.id
    with pytest.raises(PayloadError, match=f"was used for job {first.id}"):
        client.submit("chain3", {"start": 2}, tier="low", idempotency_key="same-key")
    redis_client.delete(get_settings().queue("low"))


@pytest.mark.parametrize("deadline", [float("nan"), float("inf"), 0.0, -3.0])
def test_a_deadline_is_finite_and_positive(client: Client, deadline: float) -> None:
    with pytest.raises(PayloadError, match="deadline must be a finite number of seconds above 0"):
        client.submit("chain3", {"start": 1}, tier="low", deadline_s=deadline)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["submit", "chain3", "--payload", "null"], "--payload must be a JSON object, got null"),
        (["status", "/tmp/x"], "'/tmp/x' is not a job id"),
    ],
    ids=["null", "status-path"],
)
def test_the_command_line_says_one_line_never_a_traceback(
    stack_env: dict[str, str], args: list[str], error: str
) -> None:
    result = run(*args)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobrunner: error: ") and error in line


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"start": ' + "9" * 5000 + "}", "is not valid JSON: Exceeds the limit"),
        ('{"start": ' + "9" * 100 + "}", "integer longer than 64 digits"),
        ("[" * 10_000, "is not valid JSON: nested too deeply"),
        ("[" * 40 + "]" * 40, "nested deeper than 32 levels"),
        ('{"start": NaN}', "is not valid JSON: NaN is not JSON"),
        ('{"start": -Infinity}', "is not valid JSON: -Infinity is not JSON"),
    ],
    ids=["5000-digits", "100-digits", "10000-deep", "40-deep", "nan", "infinity"],
)
def test_payload_text_is_checked_as_it_is_parsed(text: str, error: str) -> None:
    with pytest.raises(PayloadError, match="--payload") as raised:
        parse_json(text, "--payload")
    assert error in str(raised.value)


def test_status_of_a_job_holding_a_lone_surrogate_does_not_crash(
    stack_env: dict[str, str], client: Client
) -> None:
    """A step may return what JSON escapes but a terminal cannot print (a lone surrogate)."""
    job_id = "ab" * 16
    client.store.create([(job_id, {})], "sleepy", "low", 60)
    client.store.finish(job_id, "SUCCESS", result="/tmp/\ud800")
    result = run("status", job_id)
    assert result.returncode == 0, result.stderr
    assert "/tmp/\\ud800" in result.stdout
    client.store.delete([job_id])
