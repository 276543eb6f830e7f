"""What the tests that run `jobrunner deploy` share: a clean environment and its recap lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

RECAP = re.compile(r"^(\S+): ok=(\d+) changed=(\d+) unreachable=(\d+) failed=(\d+) skipped=(\d+)$")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without JOBRUNNER_* (a session fixture may have set some), and with
    the venv off PATH: deploy must find ansible-playbook next to its own interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBRUNNER_")}
    env.pop("VIRTUAL_ENV", None)
    return {**env, "PATH": os.defpath, **extra}


def recap(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    """Per host: ok, changed, unreachable, failed, skipped, from deploy's closing lines."""
    found = {}
    for line in done.stdout.splitlines():
        match = RECAP.match(line.strip())
        if match:
            keys = ("ok", "changed", "unreachable", "failed", "skipped")
            found[match.group(1)] = dict(zip(keys, map(int, match.groups()[1:]), strict=True))
    return found


def json_of(argv: list[str], env: dict[str, str], cwd: Path) -> Any:
    """What a command (`jobrunner status --json`, `celery inspect -j`) prints, as JSON."""
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout)
