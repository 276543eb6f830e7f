"""The systemd units the roles install: warm stop (SIGTERM, a stop timeout longer than the
longest step), restart on failure, and `systemd-analyze verify` clean where it exists."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

from jobrunner.config import get_settings

ROLES = Path(__file__).resolve().parents[2] / "playbooks" / "roles"
MONITOR_UNIT = ROLES / "flower/templates/jobrunner-monitor.service.j2"
UNITS = {
    "jobrunner-worker@.service": (ROLES / "workers/templates/jobrunner-worker@.service.j2", {}),
    "jobrunner-flower.service": (MONITOR_UNIT, {"monitor": {"name": "flower", "title": "Flower"}}),
    "jobrunner-metrics.service": (MONITOR_UNIT, {"monitor": {"name": "metrics", "title": "x"}}),
    "jobrunner-scheduler.service": (MONITOR_UNIT, {"monitor": {"name": "scheduler", "title": "x"}}),
    "jobrunner-redis.service": (ROLES / "redis/templates/jobrunner-redis.service.j2", {}),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The units as the roles render them, for a host whose plan says how long a stop may take
    (step time limit + margin, as roles/common/files/jobrunner_plan.py computes it)."""
    prefix = tmp_path_factory.mktemp("units")
    (prefix / "etc").mkdir()
    (prefix / "etc" / "jobrunner.env").write_text("JOBRUNNER_CONFIG=/dev/null\n")
    variables = {
        "jobrunner_user": "root",
        "jobrunner_group": "root",
        "jobrunner_prefix": str(prefix),
        "jobrunner_py": sys.executable,
        "jobrunner_plan": {"stop_timeout": get_settings().limits.step_time_limit + 60},
        "jobrunner_redis_server": "/bin/true",
        "jobrunner_redis_dir": str(prefix),
        "inventory_hostname": "host1",
    }
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    units = {}
    for name, (template, extra) in UNITS.items():
        path = prefix / name
        text = environment.from_string(template.read_text()).render({**variables, **extra})
        path.write_text(text)
        units[name] = path
    return units


def service(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser["Service"]


def test_worker_unit_stops_warmly(rendered: dict[str, Path]) -> None:
    unit = service(rendered["jobrunner-worker@.service"])
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["KillMode"] == "mixed"  # TERM to Celery's main process, not its pool children
    assert int(unit["TimeoutStopSec"]) > get_settings().limits.step_time_limit
    assert unit["Restart"] == "on-failure"
    assert "--pool %i --node-name %i@host1" in unit["ExecStart"]  # unique per host


def test_every_unit_restarts_on_failure(rendered: dict[str, Path]) -> None:
    for path in rendered.values():
        assert service(path)["Restart"] == "on-failure", path.name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_units_pass_systemd_analyze(rendered: dict[str, Path], tmp_path: Path) -> None:
    instance = tmp_path / "jobrunner-worker@general.service"
    instance.write_text(rendered["jobrunner-worker@.service"].read_text())
    others = [rendered[n] for n in UNITS if n != "jobrunner-worker@.service"]
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(instance), *map(str, others)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # verify exits 0 on a bad directive and only prints it: any line about our units fails.
    ours = [line for line in done.stderr.splitlines() if "jobrunner-" in line]
    assert not ours, "\n".join(ours)


def test_services_default_to_a_dedicated_unprivileged_account(rendered: dict[str, Path]) -> None:
    defaults = yaml.safe_load((ROLES / "common/defaults/main.yml").read_text())
    assert defaults["jobrunner_user"] not in ("root", "{{ ansible_user_id }}")
    for path in rendered.values():
        assert service(path)["User"] == "root"  # what this module rendered them with
        assert service(path)["Group"] == "root"
