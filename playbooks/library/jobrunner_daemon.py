#!/usr/bin/python
"""Ansible module: one long-running process with a pid file (redis-server, Flower) on hosts
without systemd. Idempotent like a service: left alone while it runs with the same
fingerprint, restarted (TERM, wait, then KILL) when the fingerprint changes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.jobrunner_process import alive, as_user, log_tail, read_pid

DOCUMENTATION = r"""
module: jobrunner_daemon
short_description: Run, stop or restart one detached process with a pid file
options:
  name: {description: what it is, for messages, required: true, type: str}
  argv: {description: the command, run in the foreground of its own session, type: list}
  env: {description: the whole environment (nothing else leaks in), type: dict}
  pidfile: {required: true, type: path}
  logfile: {description: stdout and stderr go here, required: true, type: path}
  chdir: {type: path}
  user: {description: the account it runs as (default: this module's), type: str}
  fingerprint: {description: changes when the process must restart, default: "", type: str}
  state: {choices: [started, restarted, stopped], default: started, type: str}
  wait_host: {description: after start, wait until this address accepts connections, type: str}
  wait_port: {type: int}
  start_timeout: {default: 30, type: int}
  stop_timeout: {default: 30, type: int}
"""


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start(module: AnsibleModule) -> None:
    p = module.params
    for path in (p["pidfile"], p["logfile"]):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(p["logfile"], "ab") as log:
        process = subprocess.Popen(
            p["argv"],
            env=p["env"] or {},
            cwd=p["chdir"] or None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this module, its session and Ansible's
            close_fds=True,
            **as_user(p["user"]),
        )
    with open(p["pidfile"], "w", encoding="ascii") as handle:
        handle.write(f"{process.pid}\n")
    deadline = time.monotonic() + p["start_timeout"]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            module.fail_json(
                msg=f"{p['name']} exited with {process.returncode}: {log_tail(p['logfile'])}"
            )
        if not p["wait_port"] or listening(p["wait_host"] or "127.0.0.1", p["wait_port"]):
            break
        time.sleep(0.2)
    else:
        module.fail_json(
            msg=f"{p['name']} did not listen on port {p['wait_port']} within "
            f"{p['start_timeout']} s: {log_tail(p['logfile'])}"
        )
    with open(p["pidfile"] + ".fingerprint", "w", encoding="utf-8") as handle:
        handle.write(p["fingerprint"] + "\n")


def stop(module: AnsibleModule) -> None:
    p = module.params
    pid = read_pid(p["pidfile"])
    if not alive(pid):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + p["stop_timeout"]
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.1)
    os.unlink(p["pidfile"])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "argv": {"type": "list", "elements": "str", "default": []},
            "env": {"type": "dict", "default": {}},
            "pidfile": {"type": "path", "required": True},
            "logfile": {"type": "path", "required": True},
            "chdir": {"type": "path"},
            "user": {"type": "str"},
            "fingerprint": {"type": "str", "default": ""},
            "state": {"choices": ["started", "restarted", "stopped"], "default": "started"},
            "wait_host": {"type": "str"},
            "wait_port": {"type": "int"},
            "start_timeout": {"type": "int", "default": 30},
            "stop_timeout": {"type": "int", "default": 30},
        },
        required_if=[("state", "started", ["argv"]), ("state", "restarted", ["argv"])],
        supports_check_mode=True,
    )
    p = module.params
    running = alive(read_pid(p["pidfile"]))
    try:
        with open(p["pidfile"] + ".fingerprint", encoding="utf-8") as handle:
            stale = handle.read().strip() != p["fingerprint"]
    except OSError:
        stale = True
    if p["state"] == "stopped":
        actions = ["stop"] if running else []
    elif p["state"] == "restarted" or (running and stale):
        actions = ["stop", "start"] if running else ["start"]
    else:
        actions = [] if running else ["start"]
    if not module.check_mode:
        for action in actions:
            stop(module) if action == "stop" else start(module)
    module.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()
