"""`jobrunner deploy`: the playbooks in playbooks/ run through ansible-runner, with live progress
per host and one clear line when something fails (which host, which task, what the module said).
"""

from __future__ import annotations

import os
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from jobrunner.config import JobrunnerError, get_settings

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"  # worker/ops/deploy.py
SITE = "site.yml"
KEEP_RUNS = 20  # artifact directories kept under <data_dir>/deploy/artifacts
# Lines ansible-playbook writes for errors that come before any task (bad inventory, syntax).
ERROR_MARKERS = ("[ERROR]:", "ERROR!")


@dataclass
class HostProgress:
    task: str = ""
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0

    def recap(self) -> str:
        return (
            f"ok={self.ok} changed={self.changed} unreachable={self.unreachable} "
            f"failed={self.failed} skipped={self.skipped}"
        )


@dataclass
class Failure:
    host: str
    task: str
    message: str
    unreachable: bool

    def line(self) -> str:
        if self.unreachable:
            return f"host {self.host} is unreachable: {self.message}"
        return f"deploy failed on host {self.host} at task {self.task!r}: {self.message}"


def _message(result: dict[str, Any]) -> str:
    """The module's own words: its msg, or for a failed command the last line it printed."""
    msg = str(result.get("msg") or "").strip()
    stderr = str(result.get("stderr") or result.get("module_stderr") or "").strip()
    if stderr and (not msg or msg.startswith(("non-zero return code", "MODULE FAILURE"))):
        msg = stderr.splitlines()[-1]
    if not msg and result.get("results"):  # a loop: the first failed item
        failed = [item for item in result["results"] if item.get("failed")]
        if failed:
            return _message(failed[0])
    return " ".join(msg.split()) or "no message"


@dataclass
class Progress:
    """Counts per host from ansible-runner's events, as Ansible's recap counts them."""

    hosts: dict[str, HostProgress] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    play: str = ""

    def host(self, name: str) -> HostProgress:
        return self.hosts.setdefault(name, HostProgress())

    def handle(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        name = data.get("host")
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
        elif kind == "runner_on_start" and name:
            self.host(name).task = data.get("task", "")
        elif kind == "runner_on_ok" and name:
            changed = bool((data.get("res") or {}).get("changed"))
            self.host(name).changed += changed
            self.host(name).ok += 1
        elif kind == "runner_on_skipped" and name:
            self.host(name).skipped += 1
        elif kind == "runner_on_failed" and name:
            if data.get("ignore_errors"):
                self.host(name).ok += 1
            else:
                self.host(name).failed += 1
                self.failures.append(
                    Failure(name, data.get("task", ""), _message(data.get("res") or {}), False)
                )
        elif kind == "playbook_on_stats":
            self._final(data)
        elif kind == "runner_on_unreachable" and name:
            self.host(name).unreachable += 1
            self.failures.append(
                Failure(name, data.get("task", ""), _message(data.get("res") or {}), True)
            )
        return True  # keep every event in the artifacts

    def _final(self, stats: dict[str, Any]) -> None:
        """Ansible's own recap is the authority once the run ends."""
        fields = {
            "ok": "ok",
            "changed": "changed",
            "failures": "failed",
            "dark": "unreachable",
            "skipped": "skipped",
        }
        for name in stats.get("processed") or {}:
            task = self.host(name).task
            self.hosts[name] = HostProgress(task=task)
        for key, attribute in fields.items():
            for name, count in (stats.get(key) or {}).items():
                setattr(self.host(name), attribute, int(count))
        for host in self.hosts.values():
            host.task = "done" if not (host.failed or host.unreachable) else host.task

    def table(self, title: str) -> Table:
        table = Table(title=f"{title}: {self.play}" if self.play else title)
        for column in ("host", "ok", "changed", "failed", "unreachable", "task"):
            table.add_column(column)
        for name, host in sorted(self.hosts.items()):
            table.add_row(
                name,
                str(host.ok),
                str(host.changed),
                str(host.failed),
                str(host.unreachable),
                host.task,
            )
        return table


def _environment() -> dict[str, str]:
    """ansible-playbook from the venv this runs in, even when the venv is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    return {
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }


def _check_inventory(inventory: Path) -> Path:
    if not inventory.exists():
        raise JobrunnerError(f"inventory {inventory} does not exist")
    if inventory.is_file() and not os.access(inventory, os.R_OK):
        raise JobrunnerError(f"inventory {inventory} is not readable")
    return inventory.resolve()


def _early_error(stdout: str, inventory: Path) -> str | None:
    """The first error ansible-playbook printed before running any task, on one line."""
    parse = re.search(r"Failed to parse inventory with '\w+' plugin: (.+)", stdout)
    if parse:
        origin = re.search(r"^Origin: (\S+:\d+:\d+)", stdout, re.MULTILINE)
        where = f" (at {origin.group(1)})" if origin else ""
        return f"inventory {inventory} does not parse: {parse.group(1).strip()}{where}"
    lines = stdout.splitlines()
    for index, line in enumerate(lines):
        stripped = line.strip()
        for marker in ERROR_MARKERS:
            if stripped.startswith(marker):
                text = stripped.removeprefix(marker).strip()
                if not text and index + 1 < len(lines):
                    text = lines[index + 1].strip()
                return f"deploy with inventory {inventory} failed: {' '.join(text.split())}"
    return None


def deploy(
    inventory: Path,
    *,
    limit: str | None,
    check: bool,
    tags: str | None,
    console: Console,
) -> None:
    """Run playbooks/site.yml on `inventory`; raise JobrunnerError naming the host and task
    that failed (or the inventory that did not parse, or the host that could not be reached)."""
    import ansible_runner

    if not (PLAYBOOKS / SITE).is_file():
        raise JobrunnerError(f"no {SITE} in {PLAYBOOKS}: deploy runs from a jobrunner checkout")
    source = _check_inventory(inventory)
    private = (get_settings().data_dir / "deploy").resolve()
    private.mkdir(parents=True, exist_ok=True)
    progress = Progress()
    title = f"deploy {inventory}" + (" (dry run)" if check else "")
    started = time.monotonic()
    with Live(progress.table(title), console=console, transient=True) as live:

        def on_event(event: dict[str, Any]) -> bool:
            keep = progress.handle(event)
            live.update(progress.table(title))
            return keep

        runner = ansible_runner.run(
            private_data_dir=str(private),
            ident=f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}",
            project_dir=str(PLAYBOOKS),
            playbook=SITE,
            inventory=str(source),
            limit=limit,
            tags=tags,
            cmdline="--check" if check else None,
            envvars=_environment(),
            event_handler=on_event,
            quiet=True,
            suppress_env_files=True,  # envvars and passwords stay out of the data dir
            rotate_artifacts=KEEP_RUNS,
        )
    elapsed = time.monotonic() - started
    for name, host in sorted(progress.hosts.items()):
        console.print(f"{name}: {host.recap()}", highlight=False)
    if progress.failures:
        raise JobrunnerError(progress.failures[0].line())
    if runner.rc != 0 or runner.status != "successful":
        stdout = runner.stdout.read() if runner.stdout else ""
        raise JobrunnerError(
            _early_error(stdout, inventory)
            or f"deploy with inventory {inventory} failed: ansible-playbook ended {runner.status}"
            f" (exit {runner.rc}); its output is in {private / 'artifacts'}"
        )
    if not progress.hosts:
        raise JobrunnerError(
            f"no host of inventory {inventory} matched"
            + (f" --limit {limit}" if limit else "")
            + " (groups: broker, workers, monitor)"
        )
    changed = sum(host.changed for host in progress.hosts.values())
    verb = "would change" if check else "changed"
    console.print(
        f"{'dry run' if check else 'deployed'}: {len(progress.hosts)} host(s), "
        f"{changed} task(s) {verb}, {elapsed:.0f} s",
        highlight=False,
    )
