"""A child process dies with its parent: Linux's PR_SET_PDEATHSIG, set in the child before it
runs its program (the setting survives exec).

For the processes of the local stack (worker/ops/supervisor.py, worker/broker/embedded.py):
`jobrunner up` killed with SIGKILL leaves no broker, worker, Flower or exporter running
unsupervised. (Celery sets the same in a worker's pool processes itself.) Elsewhere than Linux it
does nothing; there `jobrunner up` finds the stale stack at its next start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable
from functools import partial

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent exits. If the parent has already
    gone (it died between the fork and this call; `parent_pid` is who it was), exit now."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)


def child_of_this_process() -> Callable[[], None]:
    """A `preexec_fn` for subprocess.Popen: the child dies with this process."""
    return partial(die_with_parent, os.getpid())
