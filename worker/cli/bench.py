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
    data_sizes: Annotated[
        str | None,
        typer.Option(help="input sizes in MB for the data scenario, e.g. 20,200,1000"),
    ] = None,
) -> None:
    """Benchmarks against plain Celery on the same Redis and processes: a table of ratios."""
    from jobrunner.benchmarks.run import run_benchmarks

    try:
        sizes = tuple(float(size) for size in data_sizes.split(",")) if data_sizes else ()
    except ValueError:
        fail(f"--data-sizes must be numbers separated by commas, got {data_sizes!r}")
    if any(size <= 0 for size in sizes):
        fail("--data-sizes must be positive")
    try:
        run_benchmarks(
            quick=quick,
            as_json=as_json,
            only=only,
            peers=peers,
            console=console,
            data_sizes_mb=sizes,
        )
    except JobrunnerError as exc:
        fail(str(exc))
