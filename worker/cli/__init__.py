"""The `jobrunner` command (and `python -m jobrunner`): one module per command group, each
registering its commands on the shared Typer app (base.py). Errors are one line on stderr and a
non-zero exit."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from importlib import import_module

from jobrunner.config import JobrunnerError
from jobrunner.worker.cli.base import cli

# Each module registers its commands on import; `--help` lists them in this order.
COMMAND_MODULES = (
    "stack",  # up, demo
    "submit",
    "status",
    "lineage",
    "features",  # features list, versions, rollback
    "pipelines",
    "servers",  # worker, flower, metrics
    "deploy",
    "bench",
    "dlq",
    "cache",  # cache list, prune
    "api",
    "tokens",
    "audit",
    "keys",
    "control",  # cancel, pause, resume
    "schedules",  # scheduler, schedules, backfill
    "set_aside",
)
for _name in COMMAND_MODULES:
    import_module(f"{__name__}.{_name}")


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so a stack this process started is stopped, not orphaned."""
    raise SystemExit(128 + signum)


def _log_format() -> None:
    """The CLI's own log lines (and its libraries') in the configured format; a configuration
    error is left for the command to report."""
    from jobrunner.config import get_settings
    from jobrunner.worker.monitoring import logs

    with contextlib.suppress(JobrunnerError):
        logs.configure(get_settings(), logging.WARNING)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _log_format()
    try:
        cli()
    except JobrunnerError as error:
        print(f"jobrunner: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
