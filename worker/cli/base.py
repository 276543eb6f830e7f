"""What every `jobrunner` command shares: the Typer app, the console, one-line errors, JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jobrunner.config.settings import parse_duration

cli = typer.Typer(
    help="Priority job runner for data and ML pipelines on Celery and Redis.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()

TIER_HELP = "high, medium or low (default: the configured default_tier)"


def fail(message: str) -> NoReturn:
    print(f"jobrunner: error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def duration_s(text: str, option: str) -> float:
    """Seconds in an age like 7d, 12h, 30m or 90, by the settings' rule (parse_duration); a
    one-line error naming `option` if not."""
    try:
        return parse_duration(text)
    except ValueError:
        fail(f"{option} {text!r} is not a duration like 7d, 12h, 30m or 90")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def print_entries(
    entries: list[dict[str, Any]],
    *,
    as_json: bool,
    title: str,
    columns: Sequence[str],
    row: Callable[[dict[str, Any]], Sequence[object]],
) -> None:
    """A listing command's output: the entries as JSON, or a table of `row(entry)` each."""
    if as_json:
        print_json(entries)
        return
    table = Table(title=f"{title} ({len(entries)})")
    for column in columns:
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(*(Text(str(cell)) for cell in row(entry)))  # never read as markup
    console.print(table)


def hours_ago(timestamp: float) -> str:
    """An entry's age, as listings show it."""
    return f"{(time.time() - timestamp) / 3600:.1f} h"


def audit(
    action: str, target: str, detail: str = "", outcome: str = "ok", *, quiet: bool = False
) -> None:
    """Record a state-changing command in the audit trail, as the local user on this host.
    Where no broker is reachable (a deploy from a laptop), say so on stderr (unless `quiet`:
    before an error, which stays one line) and go on."""
    from jobrunner.config import JobrunnerError
    from jobrunner.worker.broker import connection
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.audit import audit_log, local_caller

    client = Client()
    try:
        connection.check_reachable(client.settings)
    except JobrunnerError as error:
        if not quiet:
            print(f"jobrunner: audit entry not recorded: {error}", file=sys.stderr)
        return
    who, where = local_caller()
    audit_log(client.store.redis, client.settings).record(
        who, action, target, outcome, where, detail
    )


def exec_celery(argv: list[str], env: dict[str, str]) -> NoReturn:
    """Replace this process by Celery, so signals (systemd, compose, Ctrl-C) reach it directly."""
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "celery", *argv], {**os.environ, **env})
