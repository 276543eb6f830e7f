"""`jobrunner bench`: the benchmarks, the only place the product imports them."""

from __future__ import annotations

from typing import Annotated

import typer

from jobrunner.config import JobrunnerError
from jobrunner.worker.cli.base import cli, console, fail


@cli.command()
def bench(
    quick: Annotated[bool, typer.Option(help="a smoke run, under 2 minutes")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    only: Annotated[str | None, typer.Option(help="run only this scenario")] = None,
    peers: Annotated[bool, typer.Option(help="also run Huey (the bench extra)")] = False,
) -> None:
    """Benchmarks against plain Celery on the same Redis and processes: a table of ratios."""
    from jobrunner.benchmarks.run import run_benchmarks

    try:
        run_benchmarks(quick=quick, as_json=as_json, only=only, peers=peers, console=console)
    except JobrunnerError as exc:
        fail(str(exc))
