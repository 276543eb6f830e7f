"""The benchmark report: rows of figures with their baselines, ratios and goals, as a rich
table or as JSON. A ratio above 1 always means jobrunner did better than that baseline."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

Better = Literal["lower", "higher"]


@dataclass(frozen=True)
class Goal:
    """A threshold on the ratio (`on="ratio"`) or on jobrunner's own figure."""

    on: Literal["ratio", "jobrunner"]
    op: Literal[">=", "<=", "<"]
    threshold: float

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<=":
            return value <= self.threshold
        return value < self.threshold

    def __str__(self) -> str:
        suffix = "x" if self.on == "ratio" else ""
        return f"{'ratio' if self.on == 'ratio' else 'value'} {self.op} {self.threshold:g}{suffix}"


@dataclass(frozen=True)
class Row:
    scenario: str
    figure: str  # ends with its unit in parentheses, e.g. "high wait p99 (ms)"
    baseline: str  # which system the ratio is against ("" for jobrunner-only figures)
    jobrunner: float
    other: float | None
    ratio: float | None
    goal: Goal | None = None
    met: bool | None = None  # None: no goal, or a --quick run (no thresholds)


def row(
    scenario: str,
    figure: str,
    baseline: str,
    ours: float,
    theirs: float | None,
    better: Better,
    goal: Goal | None = None,
) -> Row:
    """One figure against one baseline; the ratio says how many times better jobrunner did."""
    ratio = None
    if theirs is not None and ours > 0 and theirs > 0:
        ratio = theirs / ours if better == "lower" else ours / theirs
    return Row(scenario, figure, baseline, ours, theirs, ratio, goal)


def judged(rows: list[Row], thresholds: bool) -> list[Row]:
    """Rows with `met` filled in from their goals (left None without thresholds)."""
    out = []
    for r in rows:
        met = None
        if thresholds and r.goal is not None:
            value = r.ratio if r.goal.on == "ratio" else r.jobrunner
            met = value is not None and r.goal.met(value)
        out.append(Row(**{**asdict(r), "goal": r.goal, "met": met}))
    return out


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


WIDTH = 150  # the table's natural width; a console that is no terminal (CI logs) gets it


def render(rows: list[Row], meta: dict[str, Any], console: Console, *, thresholds: bool) -> None:
    if not console.is_terminal:
        console = Console(file=console.file, width=WIDTH)
    host = meta["machine"]
    console.print(
        f"machine: {host['cores']} cores, {host['memory_gb']} GB, Python {host['python']}, "
        f"1-min load {host['load_1m_at_start']} at start, {meta['processes']} worker "
        f"processes per system; wall time {meta['wall_s']:.0f} s"
    )
    table = Table(title="jobrunner bench" + ("" if thresholds else " --quick (no thresholds)"))
    for column in ("scenario", "figure", "baseline"):
        table.add_column(column)
    for column in ("jobrunner", "baseline value", "ratio"):
        table.add_column(column, justify="right")
    table.add_column("goal")
    for r in rows:
        verdict = "" if r.met is None else (" [green]met[/]" if r.met else " [red]missed[/]")
        goal = f"{r.goal}{verdict}" if r.goal else ""
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        table.add_row(
            r.scenario, r.figure, r.baseline, _number(r.jobrunner), _number(r.other), ratio, goal
        )
    console.print(table)
    console.print(
        "ratio: how many times better jobrunner did (baseline/jobrunner for times, "
        "jobrunner/baseline for rates). One run on a shared, noisy machine: read ratios, "
        "and expect 10-30% run-to-run variation."
    )


def as_json(rows: list[Row], meta: dict[str, Any]) -> str:
    def encode(r: Row) -> dict[str, Any]:
        document = asdict(r)
        document["goal"] = str(r.goal) if r.goal else None
        return document

    return json.dumps({**meta, "rows": [encode(r) for r in rows]}, indent=2)
