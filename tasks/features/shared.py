"""Work files across hosts: with `data.work_url` set (e.g. s3://bucket/work), every file a step
hands on is also put under <work_url>/<job_id>/<name>, and a step that does not find an upstream
file in its own work directory fetches it from there. Workers then need no shared disk: each
keeps its own <data_dir>, and the bucket carries the rows between them (Redis still carries only
paths and counts). Unset (the default), work files stay on the one local disk.

Upstream paths are checked before anything is fetched: a path must name a work file of this very
job (…/work/<job_id>/<name>, a plain file name), and locally must lie in its own work directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jobrunner.config import get_settings
from jobrunner.tasks.features.objects import Root, open_root
from jobrunner.tasks.features.paths import ForgedPathError, make_dirs, own_work_file, work_dir
from jobrunner.tasks.step import StepContext

WORK_FILE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def work_root() -> Root | None:
    url = get_settings().data.work_url
    return open_root(url) if url else None


def share(ctx: StepContext, *paths: Path) -> None:
    """Put the step's output files where the job's other steps, on any host, can fetch them."""
    root = work_root()
    for path in paths if root is not None else ():
        root.put_file(f"{ctx.job_id}/{path.name}", path)


def fetch(ctx: StepContext, path: str) -> Path:
    """The upstream work file `path` names, in this worker's own work directory (fetched from
    the shared work root if this worker did not write it)."""
    root = work_root()
    if root is None:
        return own_work_file(ctx.data_dir, ctx.job_id, path)
    named = Path(path)
    own = work_dir(ctx.data_dir, ctx.job_id)
    if not (
        named.is_absolute()
        and named.parent.name == ctx.job_id
        and named.parent.parent.name == "work"
        and WORK_FILE.fullmatch(named.name)
    ):
        raise ForgedPathError(f"{path!r} is not a file of job {ctx.job_id}'s work directory")
    local = own / named.name
    if not local.exists():
        temp = make_dirs(own) / f".{named.name}.{os.getpid()}.fetch"
        root.download(f"{ctx.job_id}/{named.name}", temp)
        temp.chmod(get_settings().data.file_mode)
        os.replace(temp, local)
    return local


def unshare(ctx: StepContext) -> None:
    """Remove the job's shared work files once it has succeeded."""
    root = work_root()
    if root is not None:
        root.remove_tree(ctx.job_id)
