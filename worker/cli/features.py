"""`jobrunner features`: the versioned feature store (tasks/features/versions.py): the feature
sets, the versions of one, and a rollback (itself a new, recorded version)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from jobrunner.worker.cli.base import cli, console, fail, print_json

features = typer.Typer(
    help="The versioned feature store: list, versions, rollback.", no_args_is_help=True
)

cli.add_typer(features, name="features")

HASH_CHARS = 16  # of a sha256, in tables


def _root() -> Any:
    from jobrunner.config import get_settings
    from jobrunner.tasks.features.versions import store_root

    return store_root(get_settings().data_dir.resolve())


def _row(commit: Any) -> list[str]:
    what = commit.action if commit.restores is None else f"rollback to {commit.restores}"
    return [
        str(commit.version),
        what,
        commit.committed_at,
        commit.job_id,
        str(commit.features.rows),
        str(commit.quarantine.rows),
        commit.features.sha256[:HASH_CHARS],
    ]


def _table(title: str, first: str, commits: list[tuple[str, Any]]) -> Table:
    table = Table(title=title)
    for column in (first, "version", "action", "committed", "job", "rows", "quarantined", "sha256"):
        table.add_column(column, justify="right" if column in ("rows", "quarantined") else "left")
    for label, commit in commits:
        table.add_row(label, *_row(commit))
    return table


@features.command("list")
def features_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every feature set in the store with its current version."""
    from jobrunner.tasks.features.versions import current, names

    root = _root()
    found = [(name, current(root, name)) for name in names(root)]
    if as_json:
        print_json({name: commit.model_dump(mode="json") for name, commit in found})
        return
    console.print(_table(f"feature sets in {root.url}", "name", found))


@features.command("versions")
def features_versions(
    name: Annotated[str, typer.Argument(help="a feature set (a store step's output_name)")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every version of NAME, oldest first; the last is the current one."""
    from jobrunner.tasks.features.versions import VersionError, versions

    root = _root()
    try:
        found = versions(root, name)
    except VersionError as error:
        fail(str(error))
    if not found:
        fail(f"no feature set {name!r} in {root.url} (see `jobrunner features list`)")
    if as_json:
        print_json([commit.model_dump(mode="json") for commit in found])
        return
    last = found[-1].version
    rows = [("current" if c.version == last else "", c) for c in found]
    console.print(_table(f"{name} in {root.url}", "", rows))


@features.command("rollback")
def features_rollback(
    name: Annotated[str, typer.Argument(help="a feature set")],
    to: Annotated[int, typer.Option("--to", help="the version to restore")],
) -> None:
    """Make version --to current again, as a new version (recorded, atomic, undoable)."""
    from jobrunner.tasks.features.versions import VersionError, rollback

    try:
        commit = rollback(_root(), name, to)
    except VersionError as error:
        fail(str(error))
    console.print(f"{name}: version {commit.version} restores version {to} (job {commit.job_id})")
