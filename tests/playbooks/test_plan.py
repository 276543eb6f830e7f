"""The roles' planning helper (playbooks/roles/common/files/jobrunner_plan.py): pool sizes from
a host's facts by the app's own `auto` rule, per-host overrides, and a config file the app
accepts. Pure logic on the default config; no Ansible run."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from jobrunner.config import get_settings
from jobrunner.config.settings import DEFAULT_TOML
from jobrunner.worker.runtime.headroom import auto_concurrency

HELPER = Path(__file__).resolve().parents[2] / "playbooks/roles/common/files/jobrunner_plan.py"


@pytest.fixture(scope="module")
def plan() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jobrunner_plan", HELPER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def request(**extra: object) -> dict[str, object]:
    return {
        "host": "node1",
        "config": {},
        "set": {"broker_url": "redis://:pw@10.0.0.1:6379/0", "data_dir": "/srv/jr/data"},
        "cpus": 8,
        "memory_mb": 16384,
        **extra,
    }


@pytest.fixture
def rendered(plan: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """render() with the request's config alone (nothing from this test session's env)."""
    for key in list(os.environ):
        if key.startswith("JOBRUNNER_"):
            monkeypatch.delenv(key)
    yield plan.render(request(concurrency={"express": 3}))
    get_settings.cache_clear()


@pytest.mark.parametrize(("cpus", "memory_mb"), [(1, 512), (2, 1024), (8, 2048), (64, 262144)])
def test_auto_pools_use_the_runtime_rule(plan: ModuleType, cpus: int, memory_mb: int) -> None:
    defaults = tomllib.loads(DEFAULT_TOML.read_text())
    pools = plan.pool_sizes(defaults, request(cpus=cpus, memory_mb=memory_mb))
    admission = defaults["admission"]
    for name, pool in defaults["pools"].items():
        if pool.get("concurrency", "auto") == "auto":
            expected = auto_concurrency(
                cpus, memory_mb, admission["memory_reserve_mb"], admission["process_memory_mb"]
            )
        else:
            expected = pool["concurrency"]
        assert pools[name]["concurrency"] == expected


def test_a_host_override_wins(plan: ModuleType) -> None:
    defaults = tomllib.loads(DEFAULT_TOML.read_text())
    pools = plan.pool_sizes(defaults, request(concurrency={"general": 5}))
    assert pools["general"]["concurrency"] == 5


def test_rendered_config_is_what_the_app_reads(rendered: dict[str, Any]) -> None:
    document = tomllib.loads(rendered["toml"])
    assert document["broker_url"] == "redis://:pw@10.0.0.1:6379/0"
    assert document["pools"]["express"]["concurrency"] == 3
    plan = rendered["plan"]
    settings = get_settings()
    assert set(plan["pools"]) == set(settings.pools)
    for name, pool in plan["pools"].items():
        assert pool["node"] == f"{name}@node1"
        assert pool["queues"] == settings.pool_queues(name)
        assert f"--queues={','.join(settings.pool_queues(name))}" in pool["options"]
        assert not any(option.startswith("--hostname") for option in pool["options"])
    assert "--concurrency=3" in plan["pools"]["express"]["options"]
    assert plan["stop_timeout"] > settings.limits.step_time_limit


def test_bad_config_is_one_line(
    plan: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in list(os.environ):
        if key.startswith("JOBRUNNER_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(request(config={"pools": {"x": {}}}))))
    with pytest.raises(SystemExit) as exited:
        plan.main()
    get_settings.cache_clear()
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pools" in err


def test_monitor_credentials_reach_monitor_hosts_only(plan: ModuleType) -> None:
    monitors = {
        "flower": {"basic_auth": "a:b", "port": "5601", "address": ""},
        "metrics": {"basic_auth": "c:d", "port": "", "address": "10.0.0.1"},
    }
    on_monitor = plan.monitor_settings({"monitors": monitors, "monitor_host": True})
    assert on_monitor == {
        "flower": {"basic_auth": "a:b", "port": 5601},
        "metrics": {"basic_auth": "c:d", "address": "10.0.0.1"},
    }
    on_worker = plan.monitor_settings({"monitors": monitors, "monitor_host": "False"})
    assert on_worker == {"flower": {"port": 5601}, "metrics": {"address": "10.0.0.1"}}
