"""What this host has free right now (psutil), and the `concurrency = auto` rule."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


def host_cpus() -> int:
    """CPUs this process may run on (respects affinity and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return psutil.cpu_count(logical=True) or 1


@dataclass(frozen=True)
class Headroom:
    cpus: int
    memory_total_mb: int
    memory_available_mb: int
    load_per_cpu: float
    taken_at: float


def measure() -> Headroom:
    memory = psutil.virtual_memory()
    cpus = host_cpus()
    return Headroom(
        cpus=cpus,
        memory_total_mb=memory.total // MB,
        memory_available_mb=memory.available // MB,
        load_per_cpu=os.getloadavg()[0] / cpus,
        taken_at=time.time(),
    )


def auto_concurrency(cpus: int, memory_total_mb: int, reserve_mb: int, process_mb: int) -> int:
    """One process per CPU, fewer if the memory left after the reserve cannot hold them.

    The Ansible role computes the same from facts (vCPUs, memory) for each host.
    """
    by_memory = (memory_total_mb - reserve_mb) // process_mb
    return max(1, min(cpus, by_memory))
