"""`jobrunner up` and `jobrunner demo`: the local stack in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from jobrunner.config import get_settings
from jobrunner.worker.cli.base import cli, console


@cli.command()
def up(
    no_flower: Annotated[bool, typer.Option(help="do not start Flower")] = False,
    no_metrics: Annotated[bool, typer.Option(help="do not start the metrics exporter")] = False,
    no_api: Annotated[bool, typer.Option(help="do not start the HTTP API")] = False,
) -> None:
    """Run the local stack in the foreground: broker, a worker per pool, Flower, the metrics
    exporter and the HTTP API. Ctrl-C stops it warmly (running steps finish)."""
    from jobrunner.worker.api.serve import url as api_url
    from jobrunner.worker.monitoring import flower, metrics
    from jobrunner.worker.ops.stack import LocalStack

    settings = get_settings()
    with LocalStack(
        settings, with_flower=not no_flower, with_metrics=not no_metrics, with_api=not no_api
    ) as stack:
        for notice in stack.notices:
            console.print(notice)
        nodes = stack.wait_for_workers()
        console.print(f"broker: {_redacted(stack.settings.broker_url)}")
        console.print(f"workers: {', '.join(nodes)}")
        if stack.credentials:
            creds = stack.credentials
            console.print(f"Flower: {flower.url(settings)} (user {creds.user}, {creds.source})")
        if stack.metrics_credentials:
            creds = stack.metrics_credentials
            console.print(f"metrics: {metrics.url(settings)} (user {creds.user}, {creds.source})")
        if not no_api:
            console.print(
                f"api: {api_url(settings)} (tokens: `jobrunner tokens create --role ...`)"
            )
        console.print("running; Ctrl-C stops")
        assert stack.supervisor is not None
        stack.supervisor.run()


@cli.command()
def down() -> None:
    """Stop the local stack of `jobrunner up` (warmly: running steps finish), or what is left of
    one whose `jobrunner up` was killed."""
    from jobrunner.worker.ops.stack import stop_stack

    stopped = stop_stack(get_settings())
    print(f"stopped: {', '.join(stopped)}" if stopped else "no local stack runs")


def _redacted(url: str) -> str:
    from jobrunner.worker.broker.connection import redact

    return redact(url)


@cli.command()
def demo(
    jobs: Annotated[int, typer.Option(min=1, max=200, help="jobs per tier")] = 8,
    keep: Annotated[bool, typer.Option(help="keep the stack running afterwards")] = False,
) -> None:
    """Run the sample feature pipeline at every tier on a local stack and summarize it."""
    from jobrunner.worker.ops.demo import run_demo

    run_demo(get_settings(), jobs, keep, console)
