#!/usr/bin/python
"""Ansible module: a host's Celery worker nodes, managed with `celery multi` (hosts without
systemd).

Idempotent: a node that runs with the same fingerprint (config, command line, app version) is
left alone; a changed fingerprint is a warm restart (`celery multi stopwait`: TERM, running steps
finish or return to their queue), and `state=restarted` forces one. A host's nodes stop together
and start together, so a batch of a rolling restart is as short as its slowest node.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jobrunner_process import alive, as_user, log_tail, read_pid

DOCUMENTATION = r"""
module: jobrunner_multi
short_description: Start, warm-stop or restart a host's Celery worker nodes with celery multi
options:
  pools:
    description: the plan's pools, name -> {node, options}; pid and log files are named by pool
    type: dict
    required: true
  run_dir: {description: pid (and fingerprint) files, required: true, type: path}
  log_dir: {description: log files, required: true, type: path}
  fingerprint: {description: the host's app, config and environment; changes restart, type: str}
  python: {description: interpreter that has jobrunner installed, required: true, type: str}
  app: {description: Celery app, default: jobrunner, type: str}
  env: {description: the whole environment of the nodes (nothing else leaks in), type: dict}
  secret_env: {description: more environment, kept out of Ansible's output, type: dict}
  chdir: {description: working directory, type: path}
  user: {description: the account the nodes run as (default: this module's), type: str}
  state: {choices: [started, restarted, stopped], default: started, type: str}
  stop_timeout: {description: seconds a warm stop may take before a node is killed, type: int}
  start_timeout: {description: seconds for a detached node to come up, type: int}
"""


def log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_since(path: str, offset: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            handle.seek(offset)
            return handle.read()
    except OSError:
        return ""


def fingerprint_of(node: dict) -> str:
    try:
        with open(node["pidfile"] + ".fingerprint", encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return ""


class Multi:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.p = module.params
        self.base = [self.p["python"], "-m", "celery", "-A", self.p["app"], "multi"]

    def _files(self, node: dict) -> list[str]:
        return [f"--pidfile={node['pidfile']}", f"--logfile={node['logfile']}"]

    def _spawn(self, argv: list[str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv,
            env={**self.p["env"], **self.p["secret_env"]},
            cwd=self.p["chdir"] or None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **as_user(self.p["user"]),
        )

    def stop(self, nodes: list[dict]) -> None:
        """Warm stop, all at once; a node still busy after stop_timeout is killed (its leased
        steps return to their queue), as systemd's TimeoutStopSec ends a stop."""
        stops = {
            n["name"]: self._spawn([*self.base, "stopwait", n["name"], *self._files(n)])
            for n in nodes
        }
        deadline = time.monotonic() + self.p["stop_timeout"]
        for node in nodes:
            process = stops[node["name"]]
            try:
                process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                kill = self._spawn([*self.base, "kill", node["name"], *self._files(node)])
                kill.communicate(timeout=60)
                self.module.warn(f"{node['name']} outlived its warm stop and was killed")
            if alive(read_pid(node["pidfile"])):
                self.module.fail_json(msg=f"worker {node['name']} did not stop")

    def start(self, nodes: list[dict]) -> None:
        offsets = {}
        for node in nodes:
            for path in (node["pidfile"], node["logfile"]):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            offsets[node["name"]] = log_size(node["logfile"])
            if not alive(read_pid(node["pidfile"])) and os.path.exists(node["pidfile"]):
                os.unlink(node["pidfile"])  # left by a crashed node: not ours to wait on
        starts = {
            n["name"]: self._spawn(
                [*self.base, "start", n["name"], *self._files(n), *(n["options"] or [])]
            )
            for n in nodes
        }
        for node in nodes:
            _, err = starts[node["name"]].communicate(timeout=120)
            if starts[node["name"]].returncode != 0:
                self.module.fail_json(
                    msg=f"celery multi start {node['name']} failed: {err.strip()[-500:]}"
                )
        # `multi start` returns once a node detached; it may still die on its own (a bad
        # option, a step module that does not import). Wait until each node logged that it is
        # ready, or died (then fail with its log); past the timeout the health check decides.
        deadline = time.monotonic() + self.p["start_timeout"]
        waiting = list(nodes)
        while waiting and time.monotonic() < deadline:
            time.sleep(0.3)
            for node in list(waiting):
                pid = read_pid(node["pidfile"])
                if pid and not alive(pid):
                    self.module.fail_json(
                        msg=f"worker {node['name']} exited at start: {log_tail(node['logfile'])}"
                    )
                if pid and f"{node['name']} ready." in log_since(
                    node["logfile"], offsets[node["name"]]
                ):
                    waiting.remove(node)
        for node in nodes:
            with open(node["pidfile"] + ".fingerprint", "w", encoding="utf-8") as handle:
                handle.write(node["fingerprint"] + "\n")


def nodes_of(params: dict) -> list[dict]:
    """One entry per pool: node name, worker options, pid/log files, its own fingerprint."""
    nodes = []
    for pool, spec in sorted(params["pools"].items()):
        options = [str(option) for option in spec.get("options") or []]
        digest = hashlib.sha1(
            "|".join([params["fingerprint"], *options]).encode(), usedforsecurity=False
        ).hexdigest()
        nodes.append(
            {
                "name": spec["node"],
                "options": options,
                "pidfile": os.path.join(params["run_dir"], f"worker-{pool}.pid"),
                "logfile": os.path.join(params["log_dir"], f"worker-{pool}.log"),
                "fingerprint": digest,
            }
        )
    return nodes


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pools": {"type": "dict", "required": True},
            "run_dir": {"type": "path", "required": True},
            "log_dir": {"type": "path", "required": True},
            "fingerprint": {"type": "str", "default": ""},
            "python": {"type": "str", "required": True},
            "app": {"type": "str", "default": "jobrunner"},
            "env": {"type": "dict", "default": {}},
            "secret_env": {"type": "dict", "default": {}, "no_log": True},
            "chdir": {"type": "path"},
            "user": {"type": "str"},
            "state": {"choices": ["started", "restarted", "stopped"], "default": "started"},
            "stop_timeout": {"type": "int", "default": 1860},
            "start_timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    state = module.params["state"]
    to_stop, to_start = [], []
    for node in nodes_of(module.params):
        running = alive(read_pid(node["pidfile"]))
        stale = fingerprint_of(node) != node["fingerprint"]
        if running and (state in ("stopped", "restarted") or stale):
            to_stop.append(node)
        if state == "restarted" or (state == "started" and (stale or not running)):
            to_start.append(node)
    if not module.check_mode:
        multi = Multi(module)
        if to_stop:
            multi.stop(to_stop)
        if to_start:
            multi.start(to_start)
    module.exit_json(
        changed=bool(to_stop or to_start),
        stopped=[n["name"] for n in to_stop],
        started=[n["name"] for n in to_start],
    )


if __name__ == "__main__":
    main()
