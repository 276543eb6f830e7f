"""`jobrunner audit`: the audit trail (who did what, when, from where, how it ended)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from jobrunner.worker.cli.base import cli, console, duration_s, print_json


@cli.command("audit")
def audit_command(
    since: Annotated[
        str | None, typer.Option(help="only entries this recent, e.g. 1h, 7d (default: all)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Audit entries, oldest first: submissions, retries, token changes, deploys, refusals."""
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.audit import audit_log

    client = Client()
    start = time.time() - duration_s(since, "--since") if since else None
    entries = audit_log(client.store.redis, client.settings).read(start)
    if as_json:
        print_json(entries)
        return
    table = Table(title=f"audit ({len(entries)})")
    for column in ("time", "who", "action", "target", "outcome", "where", "detail"):
        table.add_column(column)
    for e in entries:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
        table.add_row(
            stamp, e["who"], e["action"], e["target"], e["outcome"], e["where"], e["detail"]
        )
    console.print(table)
