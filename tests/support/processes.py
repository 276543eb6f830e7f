"""Stopping the server processes the fixtures start."""

from __future__ import annotations

import os
import signal
import subprocess

STOP_TIMEOUT_S = 20


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL to its whole process group if it has not ended in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
