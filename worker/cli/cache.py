"""`jobrunner cache`: cached steps' entries (`@step(cache=True)`): list, prune."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobrunner.worker.cli.base import audit, cli, duration_s, hours_ago, print_entries, print_json

cache = typer.Typer(
    help="Cached steps' entries: earlier runs' outputs that identical runs reuse.",
    no_args_is_help=True,
)

cli.add_typer(cache, name="cache")


def _client() -> Any:
    from jobrunner.worker.client import Client

    return Client()


@cache.command("list")
def cache_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every cache entry, least recently used first (expired ones until the next prune)."""
    from jobrunner.worker.store.step_cache import entries

    print_entries(
        [entry.summary() for entry in entries(_client().store.redis)],
        as_json=as_json,
        title="cache entries",
        columns=("key", "pipeline", "step", "saved by job", "files", "last used"),
        row=lambda e: (
            e["key"][:16],
            e["pipeline"] or "-",
            e["step"] or "-",
            e["job_id"] or "-",
            str(e["files"]),
            "expired" if e["expired"] else hours_ago(e["used_at"]),
        ),
    )


@cache.command("prune")
def cache_prune(
    older_than: Annotated[
        str | None,
        typer.Option(help="also remove entries unused this long, e.g. 7d, 12h, 30m or seconds"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Remove expired entries (data.cache_ttl_s after their last use) and, on this host, the
    cached files no entry names any more. A job's work files and published feature versions
    keep their own copies (hard links): pruning never removes their bytes."""
    from jobrunner.worker.store.step_cache import prune

    seconds = None if older_than is None else duration_s(older_than, "--older-than")
    client = _client()
    pruned = prune(client.store.redis, client.settings.data_dir.resolve(), seconds)
    audit("prune", "cache", f"{pruned.entries} entries, {pruned.files} files")
    if as_json:
        print_json(pruned.as_dict())
    else:
        print(
            f"pruned {pruned.entries} entries, {pruned.files} files "
            f"({pruned.bytes / 1e6:.1f} MB) and {pruned.scans} remembered input scans"
        )
