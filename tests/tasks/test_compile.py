"""compile_job: a pipeline and a payload become one Celery canvas, every task routed to the job's
queue and carrying the job context. Only signatures are built: no broker, no worker."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, chain, group, signature
from celery.canvas import Signature, chord, maybe_signature

import tests.support.steps  # noqa: F401 - registers the test steps and pipelines
from jobrunner.config.settings import get_settings
from jobrunner.tasks.builtin import COLLECT_TASK, FAN_OUT_TASK, START_TASK, is_chain, with_input
from jobrunner.tasks.compile import JobSpec, compile_job
from jobrunner.tasks.pipeline import Pipeline
from jobrunner.tasks.registry import load_pipelines
from jobrunner.tasks.step import STEP_TASK_PREFIX

JOB_ID = "job-0001"
TIER = "low"
QUEUE = "test.queue.low"  # not a configured queue: the JobSpec's queue must be used as is
PAYLOAD = {"start": 1, "count": 2}

# Flows not among tests/support/steps.py's pipelines, for shapes those do not cover.
EXTRA_FLOWS: dict[str, dict[str, Any]] = {
    "group_only": {"group": [{"step": "one"}, {"step": "one"}]},
    "nested_chain_first": {
        "chain": [{"chain": [{"group": [{"step": "one"}]}, {"step": "total"}]}, {"step": "inc"}]
    },
    "ends_in_map": {"chain": [{"step": "numbers"}, {"map": {"step": "inc"}}]},
    "ends_in_group": {"chain": [{"step": "one"}, {"group": [{"step": "inc"}, {"step": "inc"}]}]},
    "deep": {
        "chain": [
            {"step": "numbers"},
            {
                "group": [
                    {
                        "chord": [
                            {"map": {"chain": [{"step": "inc"}, {"group": [{"step": "inc"}]}]}},
                            {"step": "one"},
                        ],
                        "then": {"step": "total"},
                    },
                    {"map": {"map": {"step": "inc"}}},
                ]
            },
            {"step": "total"},
        ]
    },
}


@pytest.fixture(scope="module")
def app() -> Celery:
    # Not set as the current app: the shared step tasks of other test modules resolve to the
    # real worker app, which this one must not replace.
    return Celery("t", set_as_current=False)


@pytest.fixture(scope="module")
def pipelines() -> Iterator[dict[str, Pipeline]]:
    """Every pipeline the test steps module registers (and the file-declared ones)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("JOBRUNNER_"):
                patch.delenv(name)
        patch.setenv("JOBRUNNER_IMPORTS", "tests.support.steps")
        get_settings.cache_clear()
        try:
            found = load_pipelines(get_settings())
        finally:
            get_settings.cache_clear()
    extra = {
        name: Pipeline.model_validate({"name": name, "flow": flow})
        for name, flow in EXTRA_FLOWS.items()
    }
    assert not set(extra) & set(found)
    yield {**found, **extra}


ALL = [
    "sleepy",
    "chain3",
    "group_sum",
    "chord_first",
    "nested",
    "map_sum",
    "fails",
    "group_fails",
    "features",
    *EXTRA_FLOWS,
]


def compile_named(app: Celery, pipelines: dict[str, Pipeline], name: str) -> Signature:
    job = JobSpec(id=JOB_ID, pipeline=pipelines[name], tier=TIER, queue=QUEUE, payload=PAYLOAD)
    return compile_job(app, job)


def wire(canvas: Signature) -> dict[str, Any]:
    """The canvas as it travels: JSON (the only accepted content type)."""
    return json.loads(json.dumps(canvas))


def tasks_in(sig: dict[str, Any], inside: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every task message of a canvas in run order, with whether it runs inside a parallel
    section (a chord header or a map member). A fan_out task's `member` and `join` kwargs
    are walked as well: they become the run-time chord."""
    kind = sig.get("subtask_type")
    if kind in ("chain", "group"):
        for task in sig["kwargs"]["tasks"]:
            yield from tasks_in(task, inside)
    elif kind == "chord":
        header = sig["kwargs"]["header"]
        members = header["kwargs"]["tasks"] if isinstance(header, dict) else header
        for member in members:
            yield from tasks_in(member, True)
        yield from tasks_in(sig["kwargs"]["body"], inside)
    elif kind is None:
        yield sig, inside
        if sig["task"] == FAN_OUT_TASK:
            yield from tasks_in(sig["kwargs"]["member"], True)
            yield from tasks_in(sig["kwargs"]["join"], inside)
    else:
        raise AssertionError(f"unexpected canvas type {kind!r}")


def all_tasks(canvas: Signature) -> list[dict[str, Any]]:
    return [task for task, _ in tasks_in(wire(canvas))]


@pytest.mark.parametrize("name", ALL)
def test_every_task_goes_to_the_job_queue(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    tasks = all_tasks(compile_named(app, pipelines, name))
    assert tasks
    assert [t["options"].get("queue") for t in tasks] == [QUEUE] * len(tasks)


@pytest.mark.parametrize("name", ALL)
def test_every_task_carries_the_job_context(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    for task in all_tasks(compile_named(app, pipelines, name)):
        job = task["kwargs"]["job"]
        assert job["id"] == JOB_ID
        assert job["pipeline"] == name
        assert job["tier"] == TIER
        if task["task"].startswith(STEP_TASK_PREFIX):
            assert job["step"] == task["task"].removeprefix(STEP_TASK_PREFIX)
            assert task["kwargs"]["payload"] == PAYLOAD
        else:
            expected = {START_TASK: "start", COLLECT_TASK: "collect", FAN_OUT_TASK: "map"}
            assert job["step"] == expected[task["task"]]
            assert "payload" not in task["kwargs"]


@pytest.mark.parametrize("name", ALL)
def test_steps_compiled_are_the_pipeline_steps(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    tasks = all_tasks(compile_named(app, pipelines, name))
    names = [t["task"] for t in tasks if t["task"].startswith(STEP_TASK_PREFIX)]
    compiled = list(dict.fromkeys(n.removeprefix(STEP_TASK_PREFIX) for n in names))
    assert compiled == pipelines[name].steps()


@pytest.mark.parametrize("name", ALL)
def test_exactly_one_first_task_and_it_runs_first(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    tasks = all_tasks(compile_named(app, pipelines, name))
    flagged = [i for i, t in enumerate(tasks) if t["kwargs"]["job"].get("first")]
    assert flagged == [0]


@pytest.mark.parametrize("name", ALL)
def test_exactly_one_final_task_and_it_runs_last(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    tasks = all_tasks(compile_named(app, pipelines, name))
    flagged = [i for i, t in enumerate(tasks) if t["kwargs"]["job"].get("final")]
    assert flagged == [len(tasks) - 1]


@pytest.mark.parametrize("name", ALL)
def test_in_header_flags_exactly_the_parallel_tasks(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    pairs = list(tasks_in(wire(compile_named(app, pipelines, name))))
    assert [t["kwargs"]["job"].get("in_header", False) for t, _ in pairs] == [
        inside for _, inside in pairs
    ]


def test_flags_are_omitted_when_unset(app: Celery, pipelines: dict[str, Pipeline]) -> None:
    tasks = all_tasks(compile_named(app, pipelines, "chain3"))
    assert [sorted(t["kwargs"]["job"]) for t in tasks] == [
        ["first", "id", "pipeline", "step", "tier"],
        ["id", "pipeline", "step", "tier"],
        ["final", "id", "pipeline", "step", "tier"],
    ]


def test_single_step_is_first_and_final(app: Celery, pipelines: dict[str, Pipeline]) -> None:
    canvas = compile_named(app, pipelines, "sleepy")
    assert not is_chain(canvas) and not isinstance(canvas, chord)
    assert canvas.task == "step.sleep"
    assert canvas.kwargs["job"]["first"] is True
    assert canvas.kwargs["job"]["final"] is True


def test_chain_compiles_in_order(app: Celery, pipelines: dict[str, Pipeline]) -> None:
    canvas = compile_named(app, pipelines, "chain3")
    assert is_chain(canvas)
    assert [t.task for t in canvas.tasks] == ["step.one", "step.inc", "step.inc"]


def test_group_compiles_to_a_chord_joined_by_collect(
    app: Celery, pipelines: dict[str, Pipeline]
) -> None:
    canvas = compile_named(app, pipelines, "group_sum")
    assert is_chain(canvas)
    one, fan, total = canvas.tasks
    assert one.task == "step.one"
    assert isinstance(fan, chord)
    assert [t.task for t in fan.tasks] == ["step.inc"] * 3
    assert all(t.kwargs["job"].get("in_header") for t in fan.tasks)
    assert fan.body.task == COLLECT_TASK
    assert fan.body.kwargs["job"]["step"] == "collect"
    assert "in_header" not in fan.body.kwargs["job"]
    assert "final" not in fan.body.kwargs["job"]
    assert total.task == "step.total"
    assert total.kwargs["job"]["final"] is True


def test_group_at_the_end_makes_collect_final(app: Celery, pipelines: dict[str, Pipeline]) -> None:
    canvas = compile_named(app, pipelines, "ends_in_group")
    assert is_chain(canvas)
    fan = canvas.tasks[-1]
    assert isinstance(fan, chord)
    assert fan.body.task == COLLECT_TASK
    assert fan.body.kwargs["job"]["final"] is True


@pytest.mark.parametrize("name", ["chord_first", "group_only", "nested_chain_first"])
def test_flow_opening_in_parallel_starts_with_start(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    canvas = compile_named(app, pipelines, name)
    assert is_chain(canvas)
    start = canvas.tasks[0]
    assert start.task == START_TASK
    assert start.kwargs["job"]["first"] is True
    assert start.kwargs["job"]["step"] == "start"
    assert start.options["queue"] == QUEUE
    assert len(canvas.tasks) == 2
    assert START_TASK not in [t["task"] for t in all_tasks(canvas.tasks[1])]


@pytest.mark.parametrize("name", ["chain3", "group_sum", "nested", "map_sum", "sleepy"])
def test_flow_opening_with_a_task_has_no_start(
    app: Celery, pipelines: dict[str, Pipeline], name: str
) -> None:
    assert START_TASK not in [t["task"] for t in all_tasks(compile_named(app, pipelines, name))]


def test_map_compiles_to_fan_out_with_member_and_join(
    app: Celery, pipelines: dict[str, Pipeline]
) -> None:
    canvas = compile_named(app, pipelines, "map_sum")
    assert is_chain(canvas)
    numbers, fan_out, total = canvas.tasks
    assert numbers.task == "step.numbers"
    assert fan_out.task == FAN_OUT_TASK
    assert fan_out.args == ()
    member, join = fan_out.kwargs["member"], fan_out.kwargs["join"]
    # Plain dicts, so the message holds data only.
    assert type(member) is dict
    assert type(join) is dict
    assert member["subtask_type"] == "chain"
    assert join["task"] == COLLECT_TASK
    assert "in_header" not in fan_out.kwargs["job"]
    assert total.kwargs["job"]["final"] is True


def test_map_at_the_end_makes_its_join_final(app: Celery, pipelines: dict[str, Pipeline]) -> None:
    canvas = compile_named(app, pipelines, "ends_in_map")
    assert is_chain(canvas)
    fan_out = canvas.tasks[-1]
    assert fan_out.task == FAN_OUT_TASK
    assert "final" not in fan_out.kwargs["job"]
    assert fan_out.kwargs["join"]["kwargs"]["job"]["final"] is True


def test_compiling_twice_gives_independent_canvases(
    app: Celery, pipelines: dict[str, Pipeline]
) -> None:
    first = wire(compile_named(app, pipelines, "nested"))
    second = wire(compile_named(app, pipelines, "nested"))
    assert first == second
    job = JobSpec(id="other", pipeline=pipelines["nested"], tier="high", queue="q", payload={})
    third = all_tasks(compile_job(app, job))
    assert {t["kwargs"]["job"]["id"] for t in third} == {"other"}
    assert {t["kwargs"]["job"]["id"] for t, _ in tasks_in(first)} == {JOB_ID}


def test_is_chain_holds_for_a_chain_however_it_was_built(app: Celery) -> None:
    """Built with the public `chain`, joined with `|`, or rebuilt from a message (then of
    Celery's private class `_chain`, which is no public `chain`)."""
    one, two = app.signature("step.one"), app.signature("step.inc")
    built = chain(one, two, app=app)
    message = wire(built)
    for sig in (built, one | two, signature(message, app=app), maybe_signature(message, app=app)):
        assert is_chain(sig)
    for other in (one, chord([one], two), group([one, two]), message, None):
        assert not is_chain(other)


# with_input: how fan_out hands each item to its member


def member_template(app: Celery, pipelines: dict[str, Pipeline], name: str) -> Signature:
    """The map member of pipeline `name`, rebuilt from the message as fan_out does."""
    fan_outs = [
        t for t in all_tasks(compile_named(app, pipelines, name)) if t["task"] == FAN_OUT_TASK
    ]
    return signature(fan_outs[0]["kwargs"]["member"], app=app)


def test_with_input_on_a_chain_gives_the_item_to_its_first_task(
    app: Celery, pipelines: dict[str, Pipeline]
) -> None:
    template = member_template(app, pipelines, "map_sum")
    assert is_chain(template)
    sig = with_input(template, 7)
    assert is_chain(sig)
    assert [t.task for t in sig.tasks] == ["step.inc", "step.fail_if"]
    assert tuple(sig.tasks[0].args) == (7,)
    assert tuple(sig.tasks[1].args) == ()
    # The item survives the trip through JSON, which is how the chord sends its members.
    rebuilt = signature(wire(sig), app=app)
    assert is_chain(rebuilt)
    assert tuple(rebuilt.tasks[0].args) == (7,)
    # Routing and context are kept; the template itself is untouched.
    assert [t.options["queue"] for t in sig.tasks] == [QUEUE, QUEUE]
    assert sig.tasks[0].kwargs["job"]["in_header"] is True
    assert sig.tasks[0].kwargs["payload"] == PAYLOAD
    assert tuple(template.tasks[0].args) == ()


def test_with_input_gives_each_item_to_its_own_copy(
    app: Celery, pipelines: dict[str, Pipeline]
) -> None:
    template = member_template(app, pipelines, "map_sum")
    copies = [with_input(template, item) for item in range(3)]
    assert [tuple(c.tasks[0].args) for c in copies] == [(0,), (1,), (2,)]
    assert [tuple(c.tasks[1].args) for c in copies] == [(), (), ()]


def test_with_input_on_a_nested_chain_reaches_the_innermost_first_task(app: Celery) -> None:
    inner = chain(app.signature("step.inc", kwargs={"job": {}}), app.signature("step.one"), app=app)
    # A chain inside a chain, as a message carries it (the public `chain` would flatten it).
    nested = {"task": "celery.chain", "subtask_type": "chain", "args": [], "options": {}}
    nested["kwargs"] = {"tasks": [wire(inner), wire(app.signature("step.total"))]}
    template = signature(nested, app=app)
    sig = with_input(template, {"row": 1})
    leaves = [t for t, _ in tasks_in(wire(sig))]
    assert [t["task"] for t in leaves] == ["step.inc", "step.one", "step.total"]
    assert [t["args"] for t in leaves] == [[{"row": 1}], [], []]


def test_with_input_on_a_single_task(app: Celery, pipelines: dict[str, Pipeline]) -> None:
    template = member_template(app, pipelines, "ends_in_map")
    assert template.task == "step.inc"
    sig = with_input(template, 5)
    assert tuple(sig.args) == (5,)
    assert sig.options["queue"] == QUEUE
    assert tuple(template.args) == ()
