"""`jobrunner audit`: the audit trail (who did what, when, from where, how it ended)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from jobrunner.worker.cli.base import cli, duration_s, print_entries


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
    print_entries(
        entries,
        as_json=as_json,
        title="audit",
        columns=("time", "who", "action", "target", "outcome", "where", "detail"),
        row=lambda e: (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"])),
            e["who"],
            e["action"],
            e["target"],
            e["outcome"],
            e["where"],
            e["detail"],
        ),
    )
