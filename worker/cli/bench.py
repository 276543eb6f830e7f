"""`jobrunner bench`: the benchmarks, the only place the product imports them."""

from __future__ import annotations

from typing import Annotated

import typer

from jobrunner.config import JobrunnerError
from jobrunner.worker.cli.base import cli, console, fail

MAX_FLEET = 64  # processes per system: more is a typo, not a benchmark on one host


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
    fleet_sizes: Annotated[
        str | None,
        typer.Option(help="worker processes per system for the fleet sweep, e.g. 1,2,4,8"),
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
    processes = _sizes(fleet_sizes)
    try:
        run_benchmarks(
            quick=quick,
            as_json=as_json,
            only=only,
            peers=peers,
            console=console,
            data_sizes_mb=sizes,
            fleet_sizes=processes,
        )
    except JobrunnerError as exc:
        fail(str(exc))


def _sizes(text: str | None) -> tuple[int, ...]:
    """--fleet-sizes as process counts; a one-line error for anything else."""
    try:
        sizes = tuple(int(size) for size in text.split(",")) if text else ()
    except ValueError:
        fail(f"--fleet-sizes must be whole numbers separated by commas, got {text!r}")
    if any(size < 1 or size > MAX_FLEET for size in sizes):
        fail(f"--fleet-sizes must be between 1 and {MAX_FLEET}")
    return sizes
