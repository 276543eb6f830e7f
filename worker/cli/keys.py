"""`jobrunner keys`: payload encryption keys (generate one, rotate stored values to the newest)."""

from __future__ import annotations

import typer

from jobrunner.worker.cli.base import audit, cli, fail

keys = typer.Typer(
    help="Encryption at rest: Fernet keys for payloads and results.", no_args_is_help=True
)
cli.add_typer(keys, name="keys")


@keys.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key (put it first in security.payload_key, or a key file)."""
    from jobrunner.worker.store.crypto import new_key

    print(new_key())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored payload and result with the first configured key, while workers
    run. Before: every process has the new key first and the old ones after it."""
    from jobrunner.worker.client import Client
    from jobrunner.worker.store.rekey import reseal_all

    store = Client().store
    if not store.cipher.enabled:
        fail("no payload key is set (security.payload_key or payload_key_file): nothing to do")
    changed = reseal_all(store)
    audit("keys rotate", "payloads", f"{changed} values re-sealed")
    print(f"re-sealed {changed} stored value(s) under the newest key")
