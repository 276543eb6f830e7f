"""`jobrunner pipelines`: the registered pipelines, their steps and payload schema."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from jobrunner.config import get_settings
from jobrunner.worker.cli.base import cli, console, print_json


@cli.command()
def pipelines(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """The registered pipelines, their steps and payload schema."""
    from jobrunner.tasks.registry import load_pipelines

    found = load_pipelines(get_settings())
    data = {
        name: {
            "description": p.description,
            "version": p.version,
            "steps": p.steps(),
            "flow": p.flow.model_dump(mode="json"),
            "payload_schema": p.payload_model().model_json_schema(),
        }
        for name, p in found.items()
    }
    if as_json:
        print_json(data)
        return
    table = Table(title="pipelines")
    for column in ("name", "steps", "payload fields", "description"):
        table.add_column(column)
    for name, info in data.items():
        fields = [
            f"{field}: {spec.get('type', 'any')}"
            + (f" = {spec['default']!r}" if "default" in spec else " (required)")
            for field, spec in info["payload_schema"].get("properties", {}).items()
        ]
        table.add_row(name, " -> ".join(info["steps"]), "\n".join(fields), info["description"])
    console.print(table)
