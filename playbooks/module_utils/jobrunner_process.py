"""Process helpers shared by the jobrunner modules in playbooks/library (pid files, liveness,
the tail of a log for an error message). Ansible ships this file to the host with each module."""

from __future__ import annotations

import os
import pwd
from typing import Any


def read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not a running worker
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def log_tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return " | ".join(line.strip() for line in handle.readlines()[-lines:])
    except OSError:
        return "no log"


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that start a service as `user` (its group, no other groups, files it
    creates closed to others); none when it is the account this module runs as already."""
    if not user or user == pwd.getpwuid(os.geteuid()).pw_name:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": [], "umask": 0o027}
