"""Versions of a made-up feature set ("daily") published straight into a feature store, for
tests of the store and of `jobrunner features`."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from jobrunner.tasks.features.objects import Root
from jobrunner.tasks.features.versions import Commit, DataFile, publish, upload


def publish_test_version(root: Root, job: str, content: bytes) -> Commit:
    """Publish `content` as the next version of feature set "daily", by job `job`."""
    with tempfile.TemporaryDirectory() as temp:
        source = Path(temp) / "features.parquet"
        source.write_bytes(content)
        return _publish(root, job, content, source)


def _publish(root: Root, job: str, content: bytes, source: Path) -> Commit:
    digest = hashlib.sha256(content).hexdigest()
    file = upload(root, "daily", source, digest, ".parquet")
    data = DataFile(file=file, sha256=digest, rows=len(content))
    return publish(
        root,
        Commit(
            name="daily",
            version=0,
            action="publish",
            committed_at="",
            job_id=job,
            features=data,
            quarantine=data,
            statistics={},
            pipeline="features",
            pipeline_version="1",
        ),
    )
