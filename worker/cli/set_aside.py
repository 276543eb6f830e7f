"""`jobrunner set-aside`: messages refused before their step ran (list, show, purge)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobrunner.worker.cli.base import cli, duration_s, fail, hours_ago, print_entries, print_json

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
    print_entries(
        _store().entries(),
        as_json=as_json,
        title="set-aside messages",
        columns=("id", "queue", "age", "reason", "message"),
        row=lambda e: (
            e["id"],
            e["queue"],
            hours_ago(e["time"]),
            e["reason"],
            e["message"][:MESSAGE_CHARS],
        ),
    )


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
