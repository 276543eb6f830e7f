"""`jobrunner set-aside`: messages refused before their step ran (list, show, purge)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from jobrunner.worker.cli.base import cli, console, duration_s, fail, print_json

set_aside = typer.Typer(
    help="Messages refused before their step ran (undecodable, foreign task, no such job), "
    "with the reason each was refused.",
    no_args_is_help=True,
)

cli.add_typer(set_aside, name="set-aside")

MESSAGE_CHARS = 80  # of a message in the table; `show` prints it whole


def _store() -> Any:
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.set_aside import SetAsideStore

    return SetAsideStore(Client().store.redis)


@set_aside.command("list")
def set_aside_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every set-aside message, oldest first."""
    entries = _store().entries()
    if as_json:
        print_json(entries)
        return
    table = Table(title=f"set-aside messages ({len(entries)})")
    for column in ("id", "queue", "age", "reason", "message"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        age = f"{(time.time() - entry['time']) / 3600:.1f} h"
        message = entry["message"][:MESSAGE_CHARS]
        table.add_row(entry["id"], entry["queue"], age, entry["reason"], message, markup=False)
    console.print(table)


@set_aside.command("show")
def set_aside_show(entry_id: Annotated[str, typer.Argument(help="the entry's id")]) -> None:
    """One set-aside message in full, with its reason (JSON)."""
    entry = _store().get(entry_id)
    if entry is None:
        fail(f"no set-aside message {entry_id}")
    print_json(entry)


@set_aside.command("purge")
def set_aside_purge(
    older_than: Annotated[str, typer.Option(help="age, e.g. 7d, 12h, 30m or seconds (0: all)")],
) -> None:
    """Remove set-aside messages older than the given age (nothing else removes them)."""
    seconds = duration_s(older_than, "--older-than")
    print(f"purged {_store().purge(seconds)} set-aside message(s) older than {older_than}")
