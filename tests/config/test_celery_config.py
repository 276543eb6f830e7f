"""The Celery configuration built from Settings: JSON only, strict tier priority, late acks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Queue

from jobrunner.config.celery_config import celery_config
from jobrunner.config.settings import TIERS, Settings, get_settings

CUSTOM_TOML = """
default_tier = "low"
[tiers.high]
queue = "q.hi"
[tiers.medium]
queue = "q.mid"
[tiers.low]
queue = "q.lo"
[limits]
step_soft_time_limit = 4000
step_time_limit = 5000
result_expires = 120
"""


@pytest.fixture
def settings() -> Settings:
    return get_settings()


@pytest.fixture
def custom_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Tier queues, default tier and time limits that differ from default.toml."""
    path = tmp_path / "custom.toml"
    path.write_text(CUSTOM_TOML, encoding="utf-8")
    monkeypatch.setenv("JOBRUNNER_CONFIG", str(path))
    monkeypatch.setenv("JOBRUNNER_IMPORTS", "my.steps, other.steps")
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", "redis://broker:6379/0")
    get_settings.cache_clear()
    return get_settings()


def _strings(value: Any) -> Iterator[str]:
    """Every string in a nested config value, queues included."""
    if isinstance(value, Queue):
        yield from (value.name, value.routing_key, str(value.exchange.name))
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _strings(item)


def test_json_only(settings: Settings) -> None:
    config = celery_config(settings)
    assert config["task_serializer"] == "json"
    assert config["result_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]


def test_no_pickle_anywhere(settings: Settings) -> None:
    found = [s for s in _strings(celery_config(settings)) if "pickle" in s.lower()]
    assert found == []


def test_late_ack_and_one_message_per_process(settings: Settings) -> None:
    config = celery_config(settings)
    assert config["task_acks_late"] is True
    assert config["worker_prefetch_multiplier"] == 1


def test_strict_priority_polling(settings: Settings) -> None:
    config = celery_config(settings)
    transport = config["broker_transport_options"]
    assert transport["queue_order_strategy"] == "priority"
    # One priority step only: kombu's default (0, 3, 6, 9) would let per-message priority
    # reorder messages across tiers.
    assert transport["priority_steps"] == [0]
    assert config["task_default_priority"] == 0


@pytest.mark.parametrize("which", ["default", "custom"])
def test_visibility_timeout_is_the_renewed_lease(
    which: str, request: pytest.FixtureRequest
) -> None:
    """Workers renew the leases of what they hold, so the timeout is the short lease (a crashed
    worker's steps return promptly), checked for often, with lost processes requeued."""
    settings = request.getfixturevalue("settings" if which == "default" else "custom_settings")
    config = celery_config(settings)
    assert config["task_time_limit"] == settings.limits.step_time_limit
    assert config["task_soft_time_limit"] == settings.limits.step_soft_time_limit
    lease = settings.reliability.lease_s
    broker_options = config["broker_transport_options"]
    assert broker_options["visibility_timeout"] == lease
    assert config["result_backend_transport_options"]["visibility_timeout"] == lease
    assert broker_options["unacked_restore_interval"] <= lease / 2
    assert broker_options["unacked_restore_throttle"] == 1
    assert config["task_reject_on_worker_lost"] is True


def test_task_queues_are_the_tier_queues_in_priority_order(settings: Settings) -> None:
    queues = celery_config(settings)["task_queues"]
    assert all(isinstance(q, Queue) for q in queues)
    assert [q.name for q in queues] == [settings.queue(t) for t in TIERS]
    assert [q.name for q in queues] == ["jobrunner.high", "jobrunner.medium", "jobrunner.low"]
    assert [q.routing_key for q in queues] == [q.name for q in queues]


def test_task_queues_follow_configured_names(custom_settings: Settings) -> None:
    config = celery_config(custom_settings)
    assert [q.name for q in config["task_queues"]] == ["q.hi", "q.mid", "q.lo"]
    assert config["task_default_queue"] == "q.lo"  # the configured default tier's queue
    assert config["task_create_missing_queues"] is False


def test_no_missing_queues_are_created(settings: Settings) -> None:
    config = celery_config(settings)
    assert config["task_create_missing_queues"] is False
    assert config["task_default_queue"] == settings.queue(settings.default_tier)
    assert config["task_default_queue"] in [q.name for q in config["task_queues"]]


def test_urls_and_limits_come_from_settings(custom_settings: Settings) -> None:
    config = celery_config(custom_settings)
    assert config["broker_url"] == "redis://broker:6379/0"
    assert config["result_backend"] == "redis://broker:6379/0"  # result_url empty
    assert config["result_expires"] == 120


def test_names_no_runtime_module(settings: Settings) -> None:
    """config/ is the leaf: the app factory names the transport and the task modules."""
    config = celery_config(settings)
    assert "imports" not in config and "broker_transport" not in config
    assert not [s for s in _strings(config) if "jobrunner.worker" in s]


def test_events_and_extended_results_for_tracking(settings: Settings) -> None:
    config = celery_config(settings)
    assert config["worker_send_task_events"] is False  # Flower turns them on while it runs
    assert config["task_send_sent_event"] is True
    assert "task_track_started" not in config  # starts come from events: no write per step
    assert config["result_extended"] is True


def test_result_writes_ride_out_a_broker_restart(settings: Settings) -> None:
    config = celery_config(settings)
    assert config["result_backend_always_retry"] is True
    assert config["result_backend_max_retries"] >= 10
