"""The pipelines this process knows: declared in files, or registered from Python modules."""

from __future__ import annotations

from celery.utils.imports import import_from_cwd

from jobrunner.config import PIPELINES_DIR, ConfigError, Settings
from jobrunner.tasks.errors import PipelineError
from jobrunner.tasks.pipeline import Pipeline, load_pipeline_file
from jobrunner.tasks.step import get_step, registered_steps

PIPELINE_SUFFIXES = (".toml", ".yaml", ".yml")
# Step modules every process loads: the built-in canvas tasks and the sample pipeline steps.
BUILTIN_STEP_MODULES = ("jobrunner.tasks.builtin", "jobrunner.tasks.features")

_REGISTERED: dict[str, Pipeline] = {}


def register_pipeline(pipeline: Pipeline) -> Pipeline:
    """Make a pipeline built in Python submittable; call it at import time of your module."""
    known = _REGISTERED.get(pipeline.name)
    if known is not None and known != pipeline:
        raise PipelineError(f"pipeline {pipeline.name!r} is registered twice, differently")
    _REGISTERED[pipeline.name] = pipeline
    return pipeline


def import_step_modules(settings: Settings) -> None:
    """Import the built-in step modules and JOBRUNNER_IMPORTS, which register their steps.

    The working directory is importable while they load, as in a Celery worker, so a user's
    own `tasks.py` loads with JOBRUNNER_IMPORTS=tasks from a client or a console script too."""
    for module in (*BUILTIN_STEP_MODULES, *settings.imports):
        try:
            import_from_cwd(module)
        except ImportError as error:
            raise ConfigError(f"imports: cannot import step module {module!r}: {error}") from None


def check_step_resources(settings: Settings) -> None:
    """Every resource class a step declares is served by some pool, or jobs would never run."""
    served = settings.resource_classes()
    for spec in registered_steps().values():
        if spec.needs.resource is not None and spec.needs.resource not in served:
            raise ConfigError(
                f"step {spec.name} needs resource class {spec.needs.resource!r}, which no pool "
                f"serves (pools serve: {', '.join(served) or 'none'})"
            )


def load_pipelines(settings: Settings) -> dict[str, Pipeline]:
    """Every pipeline: files under config/pipelines and `pipeline_dirs`, then Python ones.

    Imports the step modules first and checks their resource classes against the pools."""
    import_step_modules(settings)
    check_step_resources(settings)
    found: dict[str, Pipeline] = {}
    for directory in (PIPELINES_DIR, *settings.pipeline_dirs):
        if not directory.is_dir():
            raise ConfigError(f"pipeline_dirs: {directory} is not a directory")
        for path in sorted(p for p in directory.iterdir() if p.suffix in PIPELINE_SUFFIXES):
            pipeline = load_pipeline_file(path)
            if pipeline.name in found:
                raise PipelineError(f"pipeline file {path}: name {pipeline.name!r} is taken")
            found[pipeline.name] = pipeline
    for name, pipeline in _REGISTERED.items():
        if name in found:
            raise PipelineError(f"pipeline {name!r} is both declared in a file and in Python")
        for step_name in pipeline.steps():
            get_step(step_name)
        found[name] = pipeline
    return dict(sorted(found.items()))
