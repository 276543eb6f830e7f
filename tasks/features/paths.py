"""Where the feature pipeline may read and write, checked on every path it is handed.

A step's arguments come from a queue, and anyone who can write to the queue can forge them (a
job id of "/tmp/x", an upstream naming /etc/shadow). So nothing here trusts a path it is given:

- job ids must be exactly the format the client makes (a uuid4 in hex) before they form a path;
- every work file a step reads or writes from its upstream must resolve inside that job's own
  work directory, <data_dir>/work/<job_id>/;
- raw inputs are read only under the input roots (<data_dir>/inputs, the shipped sample data and
  `data.input_roots`), after resolving symlinks, and only if they are regular files
  (`formats.open_regular`).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from jobrunner.config import get_settings
from jobrunner.tasks.features.formats import InputError
from jobrunner.tasks.files import make_dirs as make_dirs  # the steps import it from here
from jobrunner.tasks.step import JOB_ID

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[1] / "sample_data"


class ForgedPathError(ValueError):
    """A step was handed a job id or a path that is not its own: refused, never followed."""


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ForgedPathError(f"{job_id!r} is not a job id ({JOB_ID.pattern})")
    return job_id


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it."""
    return path.resolve().is_relative_to(root.resolve())


def work_dir(data_dir: Path, job_id: str) -> Path:
    """Where a job's steps hand rows to each other; `store` removes it once the job succeeded,
    `sweep_work` once it has been left alone longer than `data.failed_work_retention_s`."""
    return data_dir / "work" / check_job_id(job_id)


def own_work_file(data_dir: Path, job_id: str, path: str) -> Path:
    """`path`, from a step's upstream, if it lies inside the job's own work directory."""
    work = work_dir(data_dir, job_id)
    candidate = Path(path)
    if not candidate.is_absolute() or not inside(candidate, work):
        raise ForgedPathError(f"{path!r} is not a file of job {job_id}'s work directory")
    return candidate


def sweep_work(data_dir: Path, now: float | None = None) -> list[str]:
    """Remove work directories nobody wrote to for `data.failed_work_retention_s` (failed or
    abandoned jobs: a live job's steps keep writing into theirs); returns the job ids removed."""
    root = data_dir / "work"
    cutoff = (time.time() if now is None else now) - get_settings().data.failed_work_retention_s
    removed = []
    for entry in sorted(root.iterdir()) if root.is_dir() else ():
        if JOB_ID.fullmatch(entry.name) and entry.is_dir() and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry)
            removed.append(entry.name)
    return removed


def local_path(url: str) -> Path | None:
    """A plain path or file:// URL as a local path; None for an object store URL (s3://...)."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    return None if "://" in url else Path(url)


def input_roots(data_dir: Path) -> list[Path]:
    """The directories raw inputs may be read under, resolved."""
    configured = [p for p in map(local_path, get_settings().data.input_roots) if p is not None]
    absolute = [p if p.is_absolute() else data_dir / p for p in configured]
    return [p.resolve() for p in (data_dir / "inputs", SAMPLE_DATA_DIR, *absolute)]


def input_root_urls() -> list[str]:
    """The object store prefixes raw inputs may be read under (`data.input_roots`' URLs)."""
    roots = get_settings().data.input_roots
    return [root.rstrip("/") for root in roots if local_path(root) is None]


def confined_input_url(url: str) -> str:
    """`url`, an object store prefix or object, if it lies under an object store input root and
    has no empty, `.` or `..` component (so it cannot name a key outside that prefix)."""
    _, _, rest = url.partition("://")
    if not rest or any(part in ("", ".", "..") for part in rest.rstrip("/").split("/")):
        raise InputError(f"{url}: an object store URL needs a bucket and no '', '.' or '..' parts")
    roots = input_root_urls()
    if not any(url.rstrip("/") == root or url.startswith(root + "/") for root in roots):
        raise InputError(
            f"{url} is outside the input roots ({', '.join(roots) or 'no object store prefix'}; "
            "add one with data.input_roots)"
        )
    return url


def confined_input_dir(data_dir: Path, input_dir: str) -> Path:
    """`input_dir` (a path or file:// URL) resolved, if it lies under an input root."""
    directory = local_path(input_dir) or Path(input_dir)
    if not directory.is_absolute():
        directory = data_dir / "inputs" / directory
    roots = input_roots(data_dir)
    if not any(inside(directory, root) for root in roots):
        raise InputError(
            f"input_dir {input_dir} is outside the input roots ({', '.join(map(str, roots))}; "
            "add one with data.input_roots)"
        )
    if not directory.is_dir():
        raise InputError(f"input_dir {input_dir} is not a directory")
    return directory


def check_pattern(pattern: str) -> str:
    """A glob that cannot leave its directory: relative, with no `..` component."""
    parts = Path(pattern).parts
    if not pattern or Path(pattern).is_absolute() or ".." in parts:
        raise InputError(f"pattern {pattern!r} must be relative to input_dir, without '..'")
    return pattern


def confined_input(data_dir: Path, path: str | Path) -> Path:
    """`path` if, symlinks resolved, it lies under an input root; refused otherwise."""
    candidate = Path(path)
    if not candidate.is_absolute() or not any(
        inside(candidate, root) for root in input_roots(data_dir)
    ):
        raise ForgedPathError(f"{path} is outside the input roots")
    return candidate
