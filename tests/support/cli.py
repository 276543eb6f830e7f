"""The `jobrunner` command run as a user runs it, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

JOBRUNNER = str(Path(sys.executable).with_name("jobrunner"))


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOBRUNNER, *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
