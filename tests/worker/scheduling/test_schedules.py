"""Schedules on real Redis and real scheduler processes: an `every = 2` schedule fires once per
firing time with one scheduler and with two at once (redbeat's lock: the standby never fires);
the lock holder SIGKILLed, the standby takes over and fires what was missed (catch_up), once;
a backfill submits exactly the missing times, and a second one nothing. Bad schedules and bad
backfills are one line and exit 1."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis

from jobrunner.config import get_settings
from jobrunner.worker.broker.keys import IDEMPOTENCY, SCHEDULE
from jobrunner.worker.scheduling.schedules import idempotency_key
from tests.fixtures.scheduler import Schedulers
from tests.support.cli import run
from tests.support.polling import eventually

pytestmark = pytest.mark.integration

EVERY_S = 2


def _config(tmp_path: Path, name: str, *, catch_up: str = "1m", extra: str = "") -> Path:
    """A scheduler config: a fast tick, a 3 s lock, and one every-2-s schedule."""
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f"""
[scheduler]
tick_s = 0.5
lock_timeout_s = 3

[schedules.{name}]
pipeline = "chain3"
tier = "low"
every = {EVERY_S}
overlap = "allow"
catch_up = "{catch_up}"
payload = {{ start = 1 }}
{extra}
"""
    )
    return path


def _fired(client: redis.Redis, name: str) -> list[float]:
    """The firing times that have a job (their idempotency keys are bound), sorted."""
    prefix = IDEMPOTENCY + f"schedule:{name}:"
    return sorted(float(k.decode()[len(prefix) :]) for k in client.scan_iter(prefix + "*"))


def _submissions(client: redis.Redis, name: str) -> int:
    """How many times any scheduler submitted a firing of `name`, deduplicated or not."""
    return int(client.hget(SCHEDULE + name, "submissions") or 0)


def _no_duplicates(client: redis.Redis, name: str) -> None:
    """Every firing time since the first has one job, and none was submitted twice. Read while
    a scheduler fires: a job's message is queued after its key is bound, and a submission is
    counted before either; so at most one submission may be in flight (or, after a SIGKILL,
    submitted again and answered with the first job)."""
    queued = client.llen(get_settings().queue("low"))
    fired = _fired(client, name)
    submissions = _submissions(client, name)
    assert fired == [fired[0] + EVERY_S * i for i in range(len(fired))], fired
    assert queued <= len(fired)  # no job twice
    assert submissions - len(fired) in (0, 1), (submissions, fired)  # no firing submitted twice


@pytest.mark.timeout(180)
def test_two_schedulers_fire_each_time_once_and_a_standby_catches_up(
    schedulers: Schedulers, redis_client: redis.Redis, tmp_path: Path
) -> None:
    name = f"tick-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, name)

    # One scheduler: once it fired, every firing time over a 6 s window, each once.
    schedulers.start("a", config)
    eventually(lambda: bool(_fired(redis_client, name)), 60)
    first = _fired(redis_client, name)[0]
    eventually(lambda: _fired(redis_client, name)[-1] >= first + 6, 30)
    window = [t for t in _fired(redis_client, name) if t <= first + 6]
    assert window == [first + EVERY_S * i for i in range(4)]

    # A second scheduler beside it: it waits on the lock and never fires.
    schedulers.start("b", config)
    eventually(lambda: "beat: Starting" in schedulers.log("b").read_text(), 60)
    started_b = _fired(redis_client, name)[-1]
    eventually(lambda: _fired(redis_client, name)[-1] >= started_b + 6, 30)
    _no_duplicates(redis_client, name)
    assert "Acquired lock" not in schedulers.log("b").read_text()

    # The holder killed: its lock lapses (3 s), and b takes over.
    schedulers.kill("a")
    eventually(lambda: "Acquired lock" in schedulers.log("b").read_text(), 60)
    eventually(lambda: _fired(redis_client, name)[-1] >= time.time() - EVERY_S, 30)
    _no_duplicates(redis_client, name)

    # b killed too, then restarted 5 s later: it fires what it missed (catch_up = 1m), once.
    schedulers.kill("b")
    time.sleep(5)  # nobody fires meanwhile: that is the point
    restarted_at = time.time()
    schedulers.start("b-again", config)
    eventually(lambda: _fired(redis_client, name)[-1] >= restarted_at, 60)
    _no_duplicates(redis_client, name)  # the times while no scheduler ran are there too


def test_backfill_submits_exactly_the_missing_times_and_then_nothing(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    name = f"fill-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, name)
    start = 1_798_761_600.0  # 2027-01-01T00:00:00Z: 31 firing times to 00:01:00 inclusive
    span = ["--from", "2027-01-01T00:00:00", "--to", "2027-01-01T00:01:00"]
    # Two of them already submitted (by a scheduler, say).
    settings = get_settings()
    for at in (start + 10, start + 30):
        redis_client.set(IDEMPOTENCY + idempotency_key(name, at), "earlier-job")

    dry = run("backfill", name, *span, "--dry-run", JOBRUNNER_CONFIG=str(config))
    assert dry.returncode == 0, dry.stderr
    assert "31 firing(s) in range, 29 missing" in dry.stdout
    assert len(_fired(redis_client, name)) == 2  # a dry run submits nothing

    done = run("backfill", name, *span, "-p", "high", JOBRUNNER_CONFIG=str(config))
    assert done.returncode == 0, done.stderr
    assert "submitted 29 job(s)" in done.stdout
    assert _fired(redis_client, name) == [start + EVERY_S * i for i in range(31)]
    assert redis_client.llen(settings.queue("high")) == 29  # -p: the tier given

    again = run("backfill", name, *span, "--json", JOBRUNNER_CONFIG=str(config))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"schedule": name, "firings": 31, "missing": [], "jobs": []}
    assert redis_client.llen(settings.queue("high")) == 29


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        (["scheduler"], 'pipeline = "nope"', "unknown pipeline"),
        (["up"], 'pipeline = "nope"', "unknown pipeline"),  # nothing started
        (
            ["backfill", "nope", "--from", "2027-01-01", "--to", "2027-01-02"],
            "",
            "unknown schedule",
        ),
        (["backfill", "{name}", "--from", "yesterday", "--to", "2027-01-02"], "", "--from"),
        (
            ["backfill", "{name}", "--from", "2027-01-01", "--to", "2027-01-02", "-p", "x"],
            "",
            "tier",
        ),
    ],
)
def test_bad_schedules_and_backfills_are_one_line_and_exit_1(
    stack_env: dict[str, str], tmp_path: Path, args: list[str], extra: str, message: str
) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    config = _config(tmp_path, name)
    if extra:  # the schedule's pipeline replaced
        config.write_text(config.read_text().replace('pipeline = "chain3"', extra))
    bad = run(*(a.format(name=name) for a in args), JOBRUNNER_CONFIG=str(config))
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr


def test_a_bad_cron_is_a_configuration_error(stack_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "cron.toml"
    config.write_text('[schedules.x]\npipeline = "chain3"\ncron = "61 * * * *"\n')
    bad = run("schedules", JOBRUNNER_CONFIG=str(config))
    assert bad.returncode == 1 and "bad cron" in bad.stderr and bad.stderr.count("\n") == 1
