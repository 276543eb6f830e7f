"""The long-running processes: `jobrunner worker`, `jobrunner flower`, `jobrunner metrics`."""

from __future__ import annotations

from typing import Annotated

import typer

from jobrunner.config import get_settings
from jobrunner.worker.cli.base import cli, console, exec_celery, fail


@cli.command()
def worker(
    pool: Annotated[str, typer.Option(help="pool name from the configuration")],
    node_name: Annotated[
        str | None, typer.Option(help="Celery node name (default POOL@host)")
    ] = None,
) -> None:
    """Run one pool's Celery worker (what systemd, Ansible and compose run)."""
    from jobrunner.tasks.registry import load_pipelines
    from jobrunner.worker.broker import connection
    from jobrunner.worker.runtime.pools import worker_argv

    settings = connection.resolve(get_settings())
    argv = worker_argv(settings, pool, node_name)
    load_pipelines(settings)  # steps, pipelines and resource classes are sound before we start
    connection.check_reachable(settings)
    exec_celery(argv, {"JOBRUNNER_BROKER_URL": settings.broker_url})


@cli.command("flower")
def flower_command(
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="run without authentication (local only)")
    ] = False,
) -> None:
    """Run Flower on the configured address and port, behind basic auth."""
    from jobrunner.worker.broker import connection
    from jobrunner.worker.monitoring import flower

    settings = connection.resolve(get_settings())
    credentials = flower.configured_credentials(settings)
    if credentials is None and not insecure_no_auth:
        fail(
            "Flower needs credentials: set JOBRUNNER_FLOWER__BASIC_AUTH=user:password "
            "(or pass --insecure-no-auth for local use)"
        )
    connection.check_reachable(settings)
    env = {"JOBRUNNER_BROKER_URL": settings.broker_url, **flower.flower_env(credentials)}
    exec_celery(flower.flower_argv(settings), env)


@cli.command("metrics")
def metrics_command() -> None:
    """Serve Prometheus metrics (queues, jobs, workers, data flow, alerts) behind basic auth, and
    evaluate the alert rules. Run one per deployment."""
    from jobrunner.worker.broker import connection
    from jobrunner.worker.monitoring import logs, metrics

    settings = connection.resolve(get_settings())
    connection.check_reachable(settings)
    credentials = metrics.credentials(settings)
    try:
        exporter = metrics.Exporter(settings, credentials)
    except OSError as error:
        fail(f"cannot serve metrics on {metrics.url(settings)}: {error.strerror or error}")
    logs.configure(settings)
    console.print(
        f"metrics: {metrics.url(settings)} (user {credentials.user}, {credentials.source})"
    )
    exporter.run()
