"""Pipeline declarations: steps and how they compose, as pydantic models.

A flow is a tree of nodes, nested to any depth:

- ``{step = "name"}``: one step (optionally ``retry = {on = [...], max_retries = N, ...}``);
- ``{chain = [node, ...]}``: run in sequence, each node getting the previous one's result;
- ``{group = [node, ...]}``: run in parallel; the next node gets the list of their results;
- ``{chord = [node, ...], then = node}``: fan out, then fan in (a group followed by ``then``);
- ``{map = node}``: run ``node`` once per item of the upstream list, in parallel (fan-out sized
  at run time, e.g. one member per input partition); the next node gets the list of results.

The same tree is written in TOML or YAML under config/pipelines/, or built in Python.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    create_model,
)

from jobrunner.config.errors import first_error
from jobrunner.tasks.errors import PipelineError
from jobrunner.tasks.retry import RetryPolicy
from jobrunner.tasks.step import get_step

PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
NODE_KINDS = ("step", "chain", "group", "chord", "map")


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepNode(_Node):
    step: str
    retry: RetryPolicy | None = None  # overrides the step's own policy
    uses: list[str] = Field(default_factory=list)  # shared resources, besides the step's own


class ChainNode(_Node):
    chain: list[Node] = Field(min_length=1)


class GroupNode(_Node):
    group: list[Node] = Field(min_length=1)


class ChordNode(_Node):
    chord: list[Node] = Field(min_length=1)
    then: Node


class MapNode(_Node):
    map: Node


def _kind(value: Any) -> str | None:
    """Which node a raw mapping (or a model) is, by its key; None lets pydantic say what's wrong."""
    if isinstance(value, dict):
        keys = value.keys()
    elif isinstance(value, _Node):
        keys = type(value).model_fields.keys()
    else:  # not a mapping at all
        return None
    return next((kind for kind in NODE_KINDS if kind in keys), None)


Node = Annotated[
    Annotated[StepNode, Tag("step")]
    | Annotated[ChainNode, Tag("chain")]
    | Annotated[GroupNode, Tag("group")]
    | Annotated[ChordNode, Tag("chord")]
    | Annotated[MapNode, Tag("map")],
    Discriminator(
        _kind,
        custom_error_type="node_kind",
        custom_error_message=f"a node needs one of the keys {', '.join(NODE_KINDS)}",
    ),
]

for _model in (ChainNode, GroupNode, ChordNode, MapNode):
    _model.model_rebuild()


def step_names(node: Node) -> list[str]:
    """Every step the node uses, in declaration order, each once."""
    match node:
        case StepNode(step=name):
            found = [name]
        case ChainNode(chain=children) | GroupNode(group=children):
            found = [name for child in children for name in step_names(child)]
        case ChordNode(chord=children, then=then):
            found = [name for child in [*children, then] for name in step_names(child)]
        case MapNode(map=child):
            found = step_names(child)
    return list(dict.fromkeys(found))


class Pipeline(BaseModel):
    """A named flow of steps. Its payload schema is the union of its steps' payload models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=PIPELINE_NAME.pattern)
    description: str = ""
    version: str = "1"
    flow: Node
    # What a failed job leads to: only its dead letter, or also a new attempt (a new job linked
    # to it, submitted job_retry_delay_s later), at most max_job_retries times in a chain.
    on_failure: Literal["dead_letter", "retry_job"] = "dead_letter"
    max_job_retries: int = Field(default=3, ge=1)
    job_retry_delay_s: float = Field(default=60, ge=0)

    def steps(self) -> list[str]:
        return step_names(self.flow)

    def cached(self) -> bool:
        """Whether any of its steps is cached (`@step(cache=True)`)."""
        return any(get_step(name).cache is not None for name in self.steps())

    def payload_model(self) -> type[BaseModel]:
        """One model with every field the steps declare; unknown fields are rejected."""
        fields: dict[str, Any] = {}
        owners: dict[str, str] = {}
        for name in self.steps():
            for field, info in get_step(name).payload_model.model_fields.items():
                if field in fields and (fields[field][0], fields[field][1].default) != (
                    info.annotation,
                    info.default,
                ):
                    raise PipelineError(
                        f"pipeline {self.name}: payload field {field!r} has one type or default "
                        f"in step {owners[field]!r} and another in step {name!r}"
                    )
                fields.setdefault(field, (info.annotation, info))
                owners.setdefault(field, name)
        return create_model(  # type: ignore[call-overload, no-any-return]
            f"{self.name}_payload", __config__=ConfigDict(extra="forbid"), **fields
        )


def load_pipeline_file(path: Path) -> Pipeline:
    """Read a .toml, .yaml or .yml declaration; a bad file is one PipelineError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        pipeline = Pipeline.model_validate(raw)
        for name in pipeline.steps():
            get_step(name)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        one_line = " ".join(str(error).split())  # YAML errors span several lines
        raise PipelineError(f"pipeline file {path}: {one_line}") from None
    except ValidationError as error:
        raise PipelineError(f"pipeline file {path}: {first_error(error, 'pipeline')}") from None
    except PipelineError as error:
        raise PipelineError(f"pipeline file {path}: {error}") from None
    return pipeline
