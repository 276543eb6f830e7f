"""`jobrunner deploy` for real: ansible-runner, the site playbook and its roles on a two-host fleet
built on this machine (each host `ansible_connection=local` with its own prefix and node names),
Redis from the embedded binary, workers under `celery multi`, Flower behind auth.

The fleet is deployed once per module; the tests then check it, re-run it, dry-run it and roll it
while jobs are in flight. Every process the fleet started is stopped at the end, by its pid file.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobrunner.config import TIERS, get_settings
from jobrunner.config.settings import Settings
from jobrunner.worker.broker.embedded import free_port, redis_server_binary
from tests.support.deploy import clean_env, json_of, recap

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[3]
HOSTS = ("alpha", "beta")  # alpha: broker, workers, monitor; beta: workers
STEPS_MODULE = "tests.support.steps"
DEPLOY_TIMEOUT_S = 240
CELERY = [sys.executable, "-m", "celery", "-A", "jobrunner"]


def default_settings() -> Settings:
    """Pools and queues as the deployed hosts have them (the inventory changes neither)."""
    return get_settings()


@dataclass
class Fleet:
    base: Path
    inventory: Path
    prefixes: dict[str, Path]
    redis_url: str
    flower_url: str
    flower_auth: str
    metrics_url: str
    metrics_auth: str
    first_deploy: subprocess.CompletedProcess[str]
    first_deploy_s: float

    def deploy(self, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`python -m jobrunner deploy` (= `jobrunner deploy`) in a subprocess, as users run it."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "jobrunner",
                "deploy",
                "-i",
                str(inventory or self.inventory),
                *args,
            ],
            env=clean_env(JOBRUNNER_DATA_DIR=str(self.base / "controller"), COLUMNS="200"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT_S,
            check=False,
        )

    def host_env(self, host: str = "alpha") -> dict[str, str]:
        """What a host's services see: its config file, the repo for the test steps."""
        return {
            "PATH": os.environ["PATH"],
            "JOBRUNNER_CONFIG": str(self.prefixes[host] / "etc" / "jobrunner.toml"),
            "PYTHONPATH": str(ROOT),
        }

    def nodes(self) -> list[str]:
        return [f"{pool}@{host}" for host in HOSTS for pool in default_settings().pools]

    def inspect(self, command: str) -> dict[str, Any]:
        """`celery -A jobrunner inspect COMMAND -j` on every node, as an operator runs it."""
        return json_of(
            [*CELERY, "inspect", command, "-d", ",".join(self.nodes()), "-j", "--timeout", "5"],
            self.host_env(),
            ROOT,
        )

    def worker_pids(self) -> dict[str, int]:
        return {
            f"{pidfile.stem.removeprefix('worker-')}@{host}": int(pidfile.read_text())
            for host, prefix in self.prefixes.items()
            for pidfile in (prefix / "run").glob("worker-*.pid")
        }


def write_inventory(
    path: Path, base: Path, ports: dict[str, int], **extra: Any
) -> tuple[str, str, str]:
    """The two-host inventory; returns the broker URL and the Flower and exporter credentials."""
    password = secrets.token_urlsafe(24)
    flower_auth = f"admin:{secrets.token_urlsafe(12)}"
    metrics_auth = f"prometheus:{secrets.token_urlsafe(12)}"
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "jobrunner_service_manager": "multi",
                # The tests' own venv has jobrunner: no per-host venv and pip install.
                "jobrunner_python": sys.executable,
                # Services run as the deploying account: the prefixes are under pytest's 0700
                # tmp dir (tests/playbooks/test_fleet.py checks the dedicated system users).
                "jobrunner_user": getpass.getuser(),
                "jobrunner_redis_server": redis_server_binary(),
                "jobrunner_redis_port": ports["redis"],
                "jobrunner_redis_password": password,
                "jobrunner_flower_port": ports["flower"],
                "jobrunner_flower_basic_auth": flower_auth,
                "jobrunner_metrics_port": ports["metrics"],
                "jobrunner_metrics_basic_auth": metrics_auth,
                "jobrunner_api_port": ports["api"],
                "jobrunner_config": {"imports": [STEPS_MODULE]},
                "jobrunner_environment": {"PYTHONPATH": str(ROOT)},
                "jobrunner_health_timeout_s": 90,
                "jobrunner_prometheus_rules_dir": str(base / "alpha" / "prometheus-rules"),
                "jobrunner_grafana_dashboards_dir": str(base / "alpha" / "dashboards"),
            },
            "hosts": {
                "alpha": {"jobrunner_prefix": str(base / "alpha")},
                "beta": {
                    "jobrunner_prefix": str(base / "beta"),
                    "jobrunner_pool_concurrency": extra.get("beta_concurrency", {"general": 1}),
                },
            },
            "children": {
                "broker": {"hosts": {"alpha": {"jobrunner_redis_bind": "127.0.0.1"}}},
                "workers": {"hosts": {"alpha": None, "beta": None}},
                "monitor": {"hosts": {"alpha": None}},
            },
        }
    }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return f"redis://:{password}@127.0.0.1:{ports['redis']}/0", flower_auth, metrics_auth


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pidfile: Path, timeout: float = 30) -> None:
    """TERM the process of a pid file (ours: it was started under our tmp prefix), then KILL."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def stop_fleet(prefixes: dict[str, Path]) -> None:
    """Workers first (`celery multi stopwait`, each host's nodes together; a warm stop needs the
    broker), then Flower, then Redis (TERM: it writes its append-only file and exits)."""
    stops = []
    for host, prefix in prefixes.items():
        config = prefix / "etc" / "jobrunner.toml"
        pidfiles = sorted((prefix / "run").glob("worker-*.pid"))
        nodes = [f"{pidfile.stem.removeprefix('worker-')}@{host}" for pidfile in pidfiles]
        if nodes and config.is_file():
            stops.append(
                subprocess.Popen(
                    [*CELERY, "multi", "stopwait", *nodes, f"--pidfile={prefix}/run/worker-%n.pid"],
                    env={
                        "PATH": os.environ["PATH"],
                        "JOBRUNNER_CONFIG": str(config),
                        "PYTHONPATH": str(ROOT),
                    },
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    for stop in stops:
        try:
            stop.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stop.kill()
    for prefix in prefixes.values():
        for pidfile in (prefix / "run").glob("worker-*.pid"):
            _terminate(pidfile)  # only if stopwait could not
    for prefix in prefixes.values():
        _terminate(prefix / "run" / "flower.pid")
        _terminate(prefix / "run" / "metrics.pid")
        _terminate(prefix / "run" / "api.pid")
    for prefix in prefixes.values():
        _terminate(prefix / "run" / "redis.pid")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    prefixes = {host: base / host for host in HOSTS}
    ports = {service: free_port() for service in ("redis", "flower", "metrics", "api")}
    inventory = base / "inventory.yml"
    redis_url, flower_auth, metrics_auth = write_inventory(inventory, base, ports)
    fleet = Fleet(
        base=base,
        inventory=inventory,
        prefixes=prefixes,
        redis_url=redis_url,
        flower_url=f"http://127.0.0.1:{ports['flower']}",
        flower_auth=flower_auth,
        metrics_url=f"http://127.0.0.1:{ports['metrics']}",
        metrics_auth=metrics_auth,
        first_deploy=subprocess.CompletedProcess([], 0),
        first_deploy_s=0.0,
    )
    try:
        started = time.monotonic()
        fleet.first_deploy = fleet.deploy()
        fleet.first_deploy_s = time.monotonic() - started
        yield fleet
    finally:
        stop_fleet(prefixes)


# A job runner in a subprocess: the client's Celery app points at the fleet's Redis there,
# never at whatever this test session configured in-process.
CLIENT_SCRIPT = """
import json, sys
from jobrunner.config import TIERS, get_settings
from jobrunner.worker.client import Client

count, sleep_ms, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
client = Client()
jobs = []
for index, tier in enumerate(TIERS):
    tags = [f"{tier}-{n}" for n in range(index, count, len(TIERS))]
    payloads = [{"sleep_ms": sleep_ms, "tag": tag} for tag in tags]
    jobs += zip(tags, client.submit_many("sleepy", payloads, tier=tier))
print(json.dumps({"submitted": len(jobs)}), flush=True)
results = {}
for tag, job in jobs:
    record = job.wait(timeout)
    results[tag] = [record.state, record.result, record.finished_at]
print(json.dumps(results), flush=True)
"""


def start_jobs(fleet: Fleet, count: int, sleep_ms: int) -> subprocess.Popen[str]:
    env = clean_env(
        JOBRUNNER_BROKER_URL=fleet.redis_url,
        JOBRUNNER_IMPORTS=STEPS_MODULE,
        JOBRUNNER_DATA_DIR=str(fleet.base / "client"),
        PYTHONPATH=str(ROOT),
    )
    process = subprocess.Popen(
        [sys.executable, "-c", CLIENT_SCRIPT, str(count), str(sleep_ms), "180"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    if not first:
        process.wait()
        raise AssertionError(f"client failed: {process.stderr.read() if process.stderr else ''}")
    assert json.loads(first) == {"submitted": count}
    return process


def finish_jobs(process: subprocess.Popen[str]) -> dict[str, list[Any]]:
    out, err = process.communicate(timeout=200)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def snapshot(prefixes: dict[str, Path]) -> dict[str, tuple[float, bytes]]:
    """Every file a deploy writes (config, helper, pid and fingerprint files, redis.conf), with
    its mtime and content; logs, data and the append-only file change on their own."""
    files = {}
    for prefix in prefixes.values():
        for path in prefix.rglob("*"):
            relative = path.relative_to(prefix)
            if path.is_file() and relative.parts[0] in ("etc", "lib", "run", "redis"):
                if relative.parts[0] == "redis" and path.name != "redis.conf":
                    continue
                files[str(path)] = (path.stat().st_mtime, path.read_bytes())
    return files


def test_first_deploy_brings_up_every_host(fleet: Fleet) -> None:
    assert fleet.first_deploy.returncode == 0, fleet.first_deploy.stderr
    hosts = recap(fleet.first_deploy)
    assert set(hosts) == set(HOSTS)
    assert all(h["failed"] == 0 and h["unreachable"] == 0 for h in hosts.values())
    assert all(h["changed"] > 0 for h in hosts.values())
    print(f"first deploy: {fleet.first_deploy_s:.0f} s")


def test_every_node_answers_with_its_pools_queues(fleet: Fleet) -> None:
    settings = default_settings()
    queues = fleet.inspect("active_queues")
    assert set(queues) == set(fleet.nodes())  # unique node names: pool@inventory_hostname
    for node, consumed in queues.items():
        pool = node.split("@", 1)[0]
        assert [queue["name"] for queue in consumed] == settings.pool_queues(pool)


def test_pool_sizes_follow_the_auto_rule_unless_overridden(fleet: Fleet) -> None:
    from jobrunner.worker.runtime.pools import concurrency

    settings = default_settings()
    sizes = {node: s["pool"]["max-concurrency"] for node, s in fleet.inspect("stats").items()}
    for pool_name, pool in settings.pools.items():
        # alpha: the config's number, or for "auto" this machine's CPUs/memory by the same rule.
        assert sizes[f"{pool_name}@alpha"] == concurrency(settings, pool)
    assert sizes["general@beta"] == 1  # beta's inventory override


@pytest.mark.parametrize("monitor", ["flower", "metrics"])
def test_monitors_need_credentials(fleet: Fleet, monitor: str) -> None:
    base, auth, path = {
        "flower": (fleet.flower_url, fleet.flower_auth, "/api/workers"),
        "metrics": (fleet.metrics_url, fleet.metrics_auth, "/metrics"),
    }[monitor]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + path, timeout=10)
    assert refused.value.code == 401
    token = b64encode(auth.encode()).decode()
    request = urllib.request.Request(base + path, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        if monitor == "metrics":  # the deployed exporter reads the deployed broker
            assert b"jobrunner_queue_depth" in answer.read()


def test_monitor_hosts_get_the_prometheus_rules_and_grafana_dashboard(fleet: Fleet) -> None:
    alpha = fleet.base / "alpha"
    shipped = ROOT / "deploy"
    assert (alpha / "prometheus-rules" / "jobrunner.rules.yml").read_bytes() == (
        shipped / "prometheus" / "jobrunner.rules.yml"
    ).read_bytes()
    assert (alpha / "dashboards" / "jobrunner.json").read_bytes() == (
        shipped / "grafana" / "jobrunner.json"
    ).read_bytes()


def test_a_job_completes_on_the_fleet(fleet: Fleet) -> None:
    results = finish_jobs(start_jobs(fleet, 3, 10))
    assert {tag: got[:2] for tag, got in results.items()} == {
        f"{tier}-{n}": ["SUCCESS", f"{tier}-{n}"] for n, tier in enumerate(TIERS)
    }


def test_second_run_changes_nothing(fleet: Fleet) -> None:
    pids = fleet.worker_pids()
    done = fleet.deploy()
    assert done.returncode == 0, done.stderr
    hosts = recap(done)
    assert set(hosts) == set(HOSTS)
    assert {host: counts["changed"] for host, counts in hosts.items()} == dict.fromkeys(HOSTS, 0)
    assert fleet.worker_pids() == pids


def test_check_mode_reports_but_changes_nothing(fleet: Fleet) -> None:
    changed = fleet.base / "inventory-changed.yml"
    text = fleet.inventory.read_text().replace("general: 1", "general: 2")
    changed.write_text(text)
    before, pids = snapshot(fleet.prefixes), fleet.worker_pids()
    done = fleet.deploy("--check", "--limit", "beta", inventory=changed)
    assert done.returncode == 0, done.stderr
    assert recap(done)["beta"]["changed"] > 0  # beta's config and general pool would change
    assert "dry run" in done.stdout
    assert snapshot(fleet.prefixes) == before
    assert fleet.worker_pids() == pids


def test_rolling_restart_loses_no_job(fleet: Fleet) -> None:
    """`--tags restart` warm-restarts one host at a time while 200 jobs run: each host's
    running steps finish (or return to their queue) and the other host keeps working."""
    pids = fleet.worker_pids()
    jobs = start_jobs(fleet, 200, 700)  # about as long as the rollout itself
    started = time.time()
    done = fleet.deploy("--tags", "restart")
    restart_s = time.time() - started
    results = finish_jobs(jobs)
    assert done.returncode == 0, done.stderr
    assert all(counts["failed"] == 0 for counts in recap(done).values())
    after = fleet.worker_pids()
    assert set(after) == set(pids) and all(after[node] != pids[node] for node in pids)
    assert len(results) == 200
    wrong = {tag: got[:2] for tag, got in results.items() if got[:2] != ["SUCCESS", tag]}
    assert not wrong
    # When each host's pools were back (the restart rewrites their fingerprint files), how many
    # jobs were still to finish: the figures say the restart happened with work in flight.
    finished = sorted(got[2] for got in results.values())
    back = {
        host: (prefix / "run" / "worker-general.pid.fingerprint").stat().st_mtime
        for host, prefix in fleet.prefixes.items()
    }
    pending = {host: sum(t > at for t in finished) for host, at in back.items()}
    print(
        f"rolling restart: {restart_s:.0f} s; 200 jobs submitted, {len(results)} completed, "
        f"{200 - len(results)} lost; jobs still running when each host was back: {pending}"
    )


def deploy_cli(inventory: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", "deploy", "-i", str(inventory)],
        env=clean_env(JOBRUNNER_DATA_DIR=str(data_dir)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_unreachable_host_is_one_clear_line(tmp_path: Path) -> None:
    inventory = tmp_path / "ghost.ini"
    port = free_port()  # nothing listens there
    inventory.write_text(
        f"[workers]\nghost ansible_host=127.0.0.1 ansible_port={port} ansible_connection=ssh\n"
    )
    done = deploy_cli(inventory, tmp_path / "data")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "host ghost is unreachable" in lines[0], done.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [("all:\n  hosts: [broken\n  : yaml\n", "does not parse"), (None, "does not exist")],
)
def test_broken_inventory_is_one_clear_line(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    inventory = tmp_path / "inventory.yml"
    if content is not None:
        inventory.write_text(content)
    done = deploy_cli(inventory, tmp_path / "data")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(inventory) in lines[0], done.stderr


def test_a_failing_task_names_host_task_and_message(tmp_path: Path) -> None:
    """A config the app rejects stops the deploy on that host, before anything starts."""
    inventory = tmp_path / "bad.yml"
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "jobrunner_service_manager": "multi",
        "jobrunner_python": sys.executable,
        "jobrunner_prefix": str(tmp_path / "gamma"),
        "jobrunner_broker_url": f"redis://:unused@127.0.0.1:{free_port()}/0",
        "jobrunner_config": {"pools": {"general": {"concurrency": 0}}},
    }
    inventory.write_text(yaml.safe_dump({"workers": {"hosts": {"gamma": host}}}))
    done = deploy_cli(inventory, tmp_path / "data")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "host gamma" in lines[0] and "Stop on a config" in lines[0], lines[0]
    assert "concurrency" in lines[0]  # the app's own message
    assert not list((tmp_path / "gamma").glob("run/*.pid"))
