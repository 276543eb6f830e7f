"""`jobrunner features` as a user runs it, on a feature store in a bucket of a real S3-compatible
server: list, versions, rollback as a new version, and one-line errors."""

from __future__ import annotations

import json

from jobrunner.tasks.features.objects import open_root
from jobrunner.tasks.features.versions import versions
from tests.fixtures.s3 import S3Server
from tests.support.cli import run
from tests.support.feature_store import publish_test_version


def test_list_versions_and_rollback_on_a_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/store"
    root = open_root(url)
    for job, content in (("a" * 32, b"one"), ("b" * 32, b"two")):
        publish_test_version(root, job, content)
    env = {**s3_server.env, "JOBRUNNER_DATA__STORE_URL": url}

    listed = run("features", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["daily"]["version"] == 2

    rolled = run("features", "rollback", "daily", "--to", "1", **env)
    assert rolled.returncode == 0, rolled.stderr
    assert "daily: version 3 restores version 1 (job aaaa" in rolled.stdout
    assert [(c.version, c.action, c.job_id[0]) for c in versions(root, "daily")] == [
        (1, "publish", "a"),
        (2, "publish", "b"),
        (3, "rollback", "a"),
    ]

    shown = run("features", "versions", "daily", COLUMNS="200", **env)
    assert shown.returncode == 0, shown.stderr
    assert "current" in shown.stdout and "rollback to 1" in shown.stdout

    failed = run("features", "rollback", "daily", "--to", "7", **env)
    assert failed.returncode == 1
    assert failed.stderr == "jobrunner: error: daily has no version 7 (versions: 1, 2, 3)\n"
