"""Pipeline declarations: TOML and YAML files parsed to pydantic models, step lists, payload
models, and one PipelineError naming the file for every mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

import tests.support.steps  # noqa: F401 - registers the test steps
from jobrunner.tasks.errors import PipelineError
from jobrunner.tasks.pipeline import (
    ChainNode,
    ChordNode,
    GroupNode,
    MapNode,
    Pipeline,
    StepNode,
    load_pipeline_file,
)
from jobrunner.tasks.step import StepContext, StepPayload, step

# Steps declaring the same payload field: B with another type, D with another default, C agreeing
# with A.


class ConflictAPayload(StepPayload):
    size: int = 0


class ConflictBPayload(StepPayload):
    size: str = ""


class ConflictCPayload(StepPayload):
    size: int = 0
    label: str = "c"


class ConflictDPayload(StepPayload):
    size: int = 7


@step
def conflict_a(payload: ConflictAPayload, upstream: Any, ctx: StepContext) -> int:
    return payload.size


@step
def conflict_b(payload: ConflictBPayload, upstream: Any, ctx: StepContext) -> str:
    return payload.size


@step
def conflict_c(payload: ConflictCPayload, upstream: Any, ctx: StepContext) -> int:
    return payload.size


@step
def conflict_d(payload: ConflictDPayload, upstream: Any, ctx: StepContext) -> int:
    return payload.size


TOML_DECLARATION = """\
name = "mixed"
description = "every node kind"
version = "2"

[[flow.chain]]
step = "numbers"

[[flow.chain]]
map = { chain = [{ step = "inc" }, { step = "fail_if" }] }

[[flow.chain]]
chord = [{ step = "total" }, { group = [{ step = "one" }, { step = "inc" }] }]
then = { step = "total" }
"""

YAML_DECLARATION = """\
name: mixed
description: every node kind
version: "2"
flow:
  chain:
    - step: numbers
    - map:
        chain:
          - step: inc
          - step: fail_if
    - chord:
        - step: total
        - group:
            - step: one
            - step: inc
      then:
        step: total
"""

EXPECTED_FLOW = ChainNode(
    chain=[
        StepNode(step="numbers"),
        MapNode(map=ChainNode(chain=[StepNode(step="inc"), StepNode(step="fail_if")])),
        ChordNode(
            chord=[
                StepNode(step="total"),
                GroupNode(group=[StepNode(step="one"), StepNode(step="inc")]),
            ],
            then=StepNode(step="total"),
        ),
    ]
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    """The one-line PipelineError load_pipeline_file raises; it names the file."""
    with pytest.raises(PipelineError) as caught:
        load_pipeline_file(path)
    message = str(caught.value)
    assert message.startswith(f"pipeline file {path}: "), message
    assert "\n" not in message, message
    return message


# Parsing


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_toml_and_yaml_load_to_equal_pipelines(tmp_path: Path, suffix: str) -> None:
    from_toml = load_pipeline_file(write(tmp_path, "mixed.toml", TOML_DECLARATION))
    from_yaml = load_pipeline_file(write(tmp_path, f"mixed{suffix}", YAML_DECLARATION))
    assert from_toml == from_yaml
    assert from_toml.name == "mixed"
    assert from_toml.description == "every node kind"
    assert from_toml.version == "2"
    assert from_toml.flow == EXPECTED_FLOW


def test_declaration_equals_the_python_model(tmp_path: Path) -> None:
    from_file = load_pipeline_file(write(tmp_path, "mixed.toml", TOML_DECLARATION))
    built = Pipeline(name="mixed", description="every node kind", version="2", flow=EXPECTED_FLOW)
    assert from_file == built


def test_defaults_for_description_and_version(tmp_path: Path) -> None:
    pipeline = load_pipeline_file(write(tmp_path, "p.toml", 'name = "p"\nflow = {step = "one"}\n'))
    assert pipeline.description == ""
    assert pipeline.version == "1"
    assert pipeline.flow == StepNode(step="one")


def test_nesting_to_depth_four(tmp_path: Path) -> None:
    # chain > group > chord > map > chain > step
    text = """\
name: deep
flow:
  chain:
    - step: numbers
    - group:
        - chord:
            - map:
                chain:
                  - step: inc
                  - step: fail_if
            - step: inc
          then:
            step: total
        - step: one
    - step: total
"""
    flow = load_pipeline_file(write(tmp_path, "deep.yaml", text)).flow
    assert isinstance(flow, ChainNode)
    group = flow.chain[1]
    assert isinstance(group, GroupNode)
    chord = group.group[0]
    assert isinstance(chord, ChordNode)
    assert chord.then == StepNode(step="total")
    mapped = chord.chord[0]
    assert isinstance(mapped, MapNode)
    assert mapped.map == ChainNode(chain=[StepNode(step="inc"), StepNode(step="fail_if")])
    assert group.group[1] == StepNode(step="one")


def test_steps_in_declaration_order_once_each() -> None:
    pipeline = Pipeline.model_validate(
        {
            "name": "order",
            "flow": {
                "chain": [
                    {"step": "total"},
                    {"chord": [{"map": {"step": "inc"}}, {"step": "one"}], "then": {"step": "inc"}},
                    {"group": [{"step": "numbers"}, {"step": "total"}]},
                    {"step": "one"},
                    {"step": "fail_if"},
                ]
            },
        }
    )
    assert pipeline.steps() == ["total", "inc", "one", "numbers", "fail_if"]


def test_steps_of_a_single_step_flow() -> None:
    assert Pipeline.model_validate({"name": "s", "flow": {"step": "one"}}).steps() == ["one"]


def test_chord_then_counts_after_the_header() -> None:
    pipeline = Pipeline.model_validate(
        {"name": "c", "flow": {"chord": [{"step": "one"}], "then": {"step": "total"}}}
    )
    assert pipeline.steps() == ["one", "total"]


def test_pipelines_are_frozen() -> None:
    pipeline = Pipeline.model_validate({"name": "s", "flow": {"step": "one"}})
    with pytest.raises(ValidationError):
        pipeline.name = "other"  # type: ignore[misc]


def test_sample_features_pipeline_parses() -> None:
    import jobrunner.tasks.features  # noqa: F401 - registers the sample steps

    path = Path(__file__).resolve().parents[2] / "config" / "pipelines" / "features.toml"
    pipeline = load_pipeline_file(path)
    assert pipeline.name == "features"
    assert pipeline.steps() == ["ingest", "validate", "transform", "aggregate", "store"]
    assert isinstance(pipeline.flow, ChainNode)
    assert isinstance(pipeline.flow.chain[1], MapNode)


# Mistakes: one PipelineError naming the file


def test_unknown_node_key(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", 'name = "p"\n[flow]\nsteps = "one"\n')
    message = load_error(path)
    assert "flow" in message
    assert "step, chain, group, chord, map" in message


def test_unknown_node_key_deep_inside(tmp_path: Path) -> None:
    text = "name: p\nflow:\n  chain:\n    - step: one\n    - group:\n        - parallel: inc\n"
    message = load_error(write(tmp_path, "p.yaml", text))
    assert "flow.chain.chain.1.group.group.0" in message


@pytest.mark.parametrize(
    ("flow", "where"),
    [
        ("chain = []", "flow.chain.chain"),
        ("group = []", "flow.group.group"),
        ("chord = []\nthen = {step = 'one'}", "flow.chord.chord"),
    ],
)
def test_empty_node_list(tmp_path: Path, flow: str, where: str) -> None:
    message = load_error(write(tmp_path, "p.toml", f'name = "p"\n[flow]\n{flow}\n'))
    assert where in message
    assert "at least 1 item" in message


def test_chord_without_then(tmp_path: Path) -> None:
    message = load_error(
        write(tmp_path, "p.toml", "name = 'p'\n[flow]\nchord = [{step = 'one'}]\n")
    )
    assert "flow.chord.then" in message


def test_extra_pipeline_key(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", 'name = "p"\ncolour = "red"\n[flow]\nstep = "one"\n')
    message = load_error(path)
    assert "colour" in message
    assert "Extra inputs are not permitted" in message


def test_extra_node_key(tmp_path: Path) -> None:
    path = write(tmp_path, "p.toml", 'name = "p"\n[flow]\nstep = "one"\nretries = 3\n')
    assert "flow.step.retries" in load_error(path)


def test_node_with_two_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "name: p\nflow:\n  step: one\n  map: {step: inc}\n")
    assert "Extra inputs are not permitted" in load_error(path)


@pytest.mark.parametrize("name", ["Bad", "bad name", "1st", "", "x" * 65, "_lead"])
def test_bad_pipeline_name(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "p.toml", f'name = "{name}"\n[flow]\nstep = "one"\n')
    assert "name" in load_error(path)


@pytest.mark.parametrize("name", ["a", "features-v2", "map_sum", "x" * 64])
def test_good_pipeline_names(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "p.toml", f'name = "{name}"\n[flow]\nstep = "one"\n')
    assert load_pipeline_file(path).name == name


def test_missing_name(tmp_path: Path) -> None:
    assert "name" in load_error(write(tmp_path, "p.toml", '[flow]\nstep = "one"\n'))


def test_unknown_step(tmp_path: Path) -> None:
    text = 'name = "p"\n[flow]\nchain = [{step = "one"}, {map = {step = "nope"}}]\n'
    message = load_error(write(tmp_path, "p.toml", text))
    assert "unknown step 'nope'" in message
    assert "inc" in message  # lists the registered steps


def test_missing_file(tmp_path: Path) -> None:
    load_error(tmp_path / "absent.toml")


def test_malformed_toml(tmp_path: Path) -> None:
    load_error(write(tmp_path, "p.toml", "name = \n"))


def test_yaml_syntax_error_is_one_line(tmp_path: Path) -> None:
    assert "mapping values" in load_error(write(tmp_path, "p.yaml", "name: p\nflow: a: b: c\n"))


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    assert "pipeline" in load_error(write(tmp_path, "p.yaml", "- just\n- a list\n"))


# Payload models


def test_payload_model_merges_step_fields() -> None:
    pipeline = Pipeline.model_validate(
        {
            "name": "merge",
            "flow": {"chain": [{"step": "one"}, {"map": {"step": "fail_if"}}, {"step": "sleep"}]},
        }
    )
    model = pipeline.payload_model()
    assert set(model.model_fields) == {"start", "fail_on", "sleep_ms", "tag"}
    payload = model.model_validate({"start": 3, "fail_on": [1, 2], "tag": "t"})
    assert payload.start == 3  # type: ignore[attr-defined]
    assert payload.fail_on == (1, 2)  # type: ignore[attr-defined]
    assert payload.sleep_ms == 0  # type: ignore[attr-defined] - the step's default


def test_payload_model_defaults_only() -> None:
    model = Pipeline.model_validate({"name": "n", "flow": {"step": "numbers"}}).payload_model()
    assert model.model_validate({}).model_dump() == {"count": 3}


def test_payload_model_without_fields_accepts_only_empty() -> None:
    model = Pipeline.model_validate({"name": "n", "flow": {"step": "inc"}}).payload_model()
    assert model.model_validate({}).model_dump() == {}
    with pytest.raises(ValidationError):
        model.model_validate({"start": 1})


def test_payload_model_rejects_unknown_fields() -> None:
    model = Pipeline.model_validate({"name": "n", "flow": {"step": "one"}}).payload_model()
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"start": 1, "count": 2})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"
    assert caught.value.errors()[0]["loc"] == ("count",)


def test_payload_model_checks_types() -> None:
    model = Pipeline.model_validate({"name": "n", "flow": {"step": "one"}}).payload_model()
    with pytest.raises(ValidationError):
        model.model_validate({"start": "many"})


def test_payload_model_is_a_pydantic_model_named_after_the_pipeline() -> None:
    model = Pipeline.model_validate({"name": "chain3", "flow": {"step": "one"}}).payload_model()
    assert issubclass(model, BaseModel)
    assert model.__name__ == "chain3_payload"


def test_payload_field_shared_with_the_same_type_is_fine() -> None:
    pipeline = Pipeline.model_validate(
        {"name": "agree", "flow": {"chain": [{"step": "conflict_a"}, {"step": "conflict_c"}]}}
    )
    model = pipeline.payload_model()
    assert set(model.model_fields) == {"size", "label"}
    assert model.model_validate({"size": 4}).size == 4  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "flow",
    [
        {"chain": [{"step": "conflict_a"}, {"step": "conflict_b"}]},
        {"group": [{"step": "conflict_b"}, {"map": {"step": "conflict_c"}}]},
        {"chain": [{"step": "conflict_a"}, {"step": "conflict_d"}]},  # same type, other default
    ],
)
def test_payload_field_type_conflict(flow: dict[str, Any]) -> None:
    pipeline = Pipeline.model_validate({"name": "clash", "flow": flow})
    with pytest.raises(PipelineError) as caught:
        pipeline.payload_model()
    message = str(caught.value)
    assert "pipeline clash" in message
    assert "'size'" in message
    first, second = pipeline.steps()
    assert f"step {first!r}" in message
    assert f"step {second!r}" in message


def test_payload_model_of_an_unknown_step() -> None:
    pipeline = Pipeline.model_validate({"name": "ghost", "flow": {"step": "not_registered"}})
    with pytest.raises(PipelineError, match="unknown step 'not_registered'"):
        pipeline.payload_model()
