"""`jobrunner tokens`: API bearer tokens (create, list, revoke). A token's secret is printed
once, at creation; only its argon2 hash is stored."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from jobrunner.worker.cli.base import audit, cli, console, duration_s, fail, print_json

tokens = typer.Typer(
    help="API tokens: roles viewer, submitter, operator, scoped to pipelines and tiers.",
    no_args_is_help=True,
)
cli.add_typer(tokens, name="tokens")


def _store() -> Any:
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.tokens import TokenStore

    return TokenStore(Client().store.redis)


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


@tokens.command("create")
def tokens_create(
    role: Annotated[str, typer.Option(help="viewer (read), submitter (+ submit), operator (all)")],
    pipelines: Annotated[
        str | None, typer.Option(help="comma-separated pipelines it may touch (default: all)")
    ] = None,
    tiers: Annotated[
        str | None, typer.Option(help="comma-separated tiers it may submit at (default: all)")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="lifetime, e.g. 90d, 12h (default: never expires)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create a token and print it once (keep it: it cannot be shown again)."""
    from jobrunner.config import TIERS
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.audit import local_caller

    tier_list = _names(tiers)
    unknown = [t for t in tier_list if t not in TIERS]
    if unknown:
        fail(f"unknown tier {unknown[0]!r} in --tiers: choose from {', '.join(TIERS)}")
    pipeline_list = _names(pipelines)
    known = Client().pipelines
    missing = [p for p in pipeline_list if p not in known]
    if missing:
        fail(f"unknown pipeline {missing[0]!r} in --pipelines (known: {', '.join(known)})")
    expires_s = duration_s(expires, "--expires") if expires else None
    token, secret = _store().create(
        role,
        pipelines=pipeline_list,
        tiers=tier_list,
        expires_s=expires_s,
        created_by=local_caller()[0],
    )
    audit("token create", token.id, f"{role} pipelines={pipeline_list} tiers={tier_list}")
    if as_json:
        print_json({**token.public(), "token": secret})
        return
    print(secret)  # alone on stdout: TOKEN=$(jobrunner tokens create ...)
    print(f"token {token.id} ({role}): shown once, only its hash is kept", file=sys.stderr)


@tokens.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every token (never its secret): role, scope, expiry, whether revoked."""
    found = [token.public() for token in _store().every()]
    if as_json:
        print_json(found)
        return
    table = Table(title=f"tokens ({len(found)})")
    for column in ("id", "role", "pipelines", "tiers", "expires", "state"):
        table.add_column(column)
    now = time.time()
    for t in found:
        expires = t["expires_at"]
        state = (
            "revoked" if t["revoked_at"] else "expired" if expires and expires <= now else "live"
        )
        table.add_row(
            t["id"],
            t["role"],
            ",".join(t["pipelines"]) or "all",
            ",".join(t["tiers"]) or "all",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(expires)) if expires else "never",
            state,
        )
    console.print(table)


@tokens.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="the token's id")]) -> None:
    """Refuse the token from now on (every API process checks on each call)."""
    if not _store().revoke(token_id):
        fail(f"no token {token_id}")
    audit("token revoke", token_id)
    print(f"revoked {token_id}")
