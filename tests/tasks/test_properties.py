"""Property-based tests: any declaration either loads (and then compiles, every task routed to
the job's queue) or is refused with one PipelineError line; any payload either validates or is
refused with one PayloadError line. Nothing else escapes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.support.steps  # noqa: F401 - registers the steps the trees use
from jobrunner.tasks.compile import JobSpec, compile_job
from jobrunner.tasks.errors import PayloadError, PipelineError
from jobrunner.tasks.pipeline import Pipeline, load_pipeline_file
from jobrunner.worker.client import validate_payload

STEPS = ["one", "inc", "total", "numbers", "fail_if", "sleep"]
APP = Celery("properties", set_as_current=False)

leaf = st.builds(lambda name: {"step": name}, st.sampled_from(STEPS))
nodes = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda c: {"chain": c}, st.lists(children, min_size=1, max_size=4)),
        st.builds(lambda c: {"group": c}, st.lists(children, min_size=1, max_size=4)),
        st.builds(
            lambda c, t: {"chord": c, "then": t},
            st.lists(children, min_size=1, max_size=3),
            children,
        ),
        st.builds(lambda c: {"map": c}, children),
    ),
    max_leaves=12,
)
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(["step", "chain", "group", "chord", "then", "map", "x"]),
            inner,
            max_size=3,
        ),
    ),
    max_leaves=10,
)


def _leaves(node: dict[str, Any]) -> list[str]:
    if "step" in node:
        return [node["step"]]
    children = node.get("chain") or node.get("group") or node.get("chord") or [node["map"]]
    found = [name for child in children for name in _leaves(child)]
    return found + (_leaves(node["then"]) if "then" in node else [])


def _tasks(sig: Any) -> list[dict[str, Any]]:
    """Every task dict of a canvas, including the fan-out's member and join templates."""
    sig = dict(sig)
    kwargs = sig.get("kwargs", {})
    if sig["task"] in ("celery.chain", "celery.group"):
        return [t for child in kwargs["tasks"] for t in _tasks(child)]
    if sig["task"] == "celery.chord":
        header = kwargs["header"]
        members = header["kwargs"]["tasks"] if isinstance(header, dict) else header
        return [t for child in members for t in _tasks(child)] + _tasks(kwargs["body"])
    templates = [kwargs[key] for key in ("member", "join") if key in kwargs]
    return [sig, *(t for template in templates for t in _tasks(template))]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flow=nodes, as_yaml=st.booleans())
def test_any_well_formed_tree_loads_and_compiles(
    flow: dict[str, Any], as_yaml: bool, tmp_path: Path
) -> None:
    path = tmp_path / ("p.yaml" if as_yaml else "p.json.yml")
    text = (
        yaml.safe_dump({"name": "prop", "flow": flow})
        if as_yaml
        else json.dumps({"name": "prop", "flow": flow})
    )
    path.write_text(text)
    pipeline = load_pipeline_file(path)
    assert pipeline.steps() == list(dict.fromkeys(_leaves(flow)))
    job = JobSpec(id="j", pipeline=pipeline, tier="low", queue="q.low", payload={})
    tasks = _tasks(compile_job(APP, job))
    assert tasks and all(task["options"]["queue"] == "q.low" for task in tasks)
    assert sum(bool(task["kwargs"]["job"].get("first")) for task in tasks) == 1
    assert sum(bool(task["kwargs"]["job"].get("final")) for task in tasks) == 1


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flow=junk)
def test_any_other_declaration_is_one_pipeline_error(flow: Any, tmp_path: Path) -> None:
    path = tmp_path / "junk.yaml"
    path.write_text(yaml.safe_dump({"name": "junk", "flow": flow}))
    try:
        load_pipeline_file(path)
    except PipelineError as error:
        assert "\n" not in str(error) and str(error).startswith(f"pipeline file {path}: ")


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
CHAIN3 = Pipeline.model_validate(
    {"name": "chain3", "flow": {"chain": [{"step": "one"}, {"step": "inc"}]}}
)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(json_values, st.dictionaries(st.just("start"), json_values, max_size=1)))
def test_any_payload_validates_or_is_one_payload_error(payload: Any) -> None:
    try:
        normalized = validate_payload(CHAIN3, payload, max_bytes=200)
    except PayloadError as error:
        assert "\n" not in str(error) and "chain3" in str(error)
    else:
        assert set(normalized) == {"start"} and isinstance(normalized["start"], int)
        assert len(json.dumps(normalized)) <= 200


@given(size=st.integers(min_value=0, max_value=400))
def test_payload_size_limit_is_exact(size: int) -> None:
    pipeline = Pipeline.model_validate({"name": "sized", "flow": {"step": "sleep"}})
    payload = {"tag": "x" * size}
    limit = len(json.dumps({"sleep_ms": 0, "tag": "x" * 200}))
    try:
        validate_payload(pipeline, payload, max_bytes=limit)
    except PayloadError as error:
        assert size > 200 and f"over the {limit} limit" in str(error)
    else:
        assert size <= 200
