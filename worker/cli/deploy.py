"""`jobrunner deploy`: the playbooks through ansible-runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from jobrunner.config import JobrunnerError
from jobrunner.worker.cli.base import audit, cli, console, fail


@cli.command()
def deploy(
    inventory: Annotated[Path, typer.Option("-i", "--inventory", help="Ansible inventory")],
    limit: Annotated[str | None, typer.Option(help="only these hosts or groups")] = None,
    check: Annotated[bool, typer.Option(help="dry run: report what would change")] = False,
    tags: Annotated[str | None, typer.Option(help="only tasks with these tags")] = None,
) -> None:
    """Deploy or roll the fleet with the playbooks in playbooks/ (through ansible-runner)."""
    from jobrunner.worker.ops.deploy import deploy as run_deploy

    what = f"limit={limit or 'all'} tags={tags or 'all'}" + (" check" if check else "")
    try:
        run_deploy(inventory, limit=limit, check=check, tags=tags, console=console)
    except JobrunnerError as exc:
        audit("deploy", str(inventory), f"{what}: {exc}", outcome="failed", quiet=True)
        fail(str(exc))
    audit("deploy", str(inventory), what)
