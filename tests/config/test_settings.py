"""Settings: default.toml < the JOBRUNNER_CONFIG file < JOBRUNNER_* variables, and one-line
ConfigErrors naming the bad key."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from jobrunner.config.errors import ConfigError
from jobrunner.config.settings import DEFAULT_TOML, TIERS, Settings, get_settings


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """Write a TOML file and point JOBRUNNER_CONFIG at it."""

    def write(text: str) -> Path:
        path = tmp_path / "jobrunner.toml"
        path.write_text(text, encoding="utf-8")
        monkeypatch.setenv("JOBRUNNER_CONFIG", str(path))
        return path

    return write


def load_error() -> str:
    """The message of the ConfigError get_settings() raises; it must be one line."""
    with pytest.raises(ConfigError) as caught:
        get_settings()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


# Defaults


def test_defaults_are_default_toml() -> None:
    settings = get_settings()
    raw = tomllib.loads(DEFAULT_TOML.read_text(encoding="utf-8"))

    assert list(settings.tiers) == ["high", "medium", "low"] == list(TIERS)
    assert {t: settings.queue(t) for t in TIERS} == {
        "high": "jobrunner.high",
        "medium": "jobrunner.medium",
        "low": "jobrunner.low",
    }
    assert {t: settings.tiers[t].queue for t in TIERS} == {
        t: raw["tiers"][t]["queue"] for t in TIERS
    }
    assert settings.default_tier == "medium"
    assert set(settings.pools) == {"express", "general"}
    assert settings.pools["express"].tiers == ["high"]
    assert settings.pools["express"].concurrency == 1
    assert settings.pools["general"].tiers == ["high", "medium", "low"]
    assert settings.pools["general"].concurrency == "auto"
    assert settings.flower.address == "127.0.0.1"
    assert settings.flower.port == raw["flower"]["port"] == 5555
    assert settings.imports == []
    assert settings.pipeline_dirs == []
    assert settings.limits.step_soft_time_limit < settings.limits.step_time_limit


def test_tier_queues_are_distinct() -> None:
    settings = get_settings()
    queues = [settings.queue(t) for t in TIERS]
    assert len(set(queues)) == len(TIERS)


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("JOBRUNNER_FLOWER__PORT", "7001")
    assert get_settings() is first
    assert get_settings().flower.port == 5555
    get_settings.cache_clear()
    assert get_settings().flower.port == 7001


def test_effective_result_url_falls_back_to_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", "redis://broker:6379/0")
    assert get_settings().effective_result_url == "redis://broker:6379/0"
    monkeypatch.setenv("JOBRUNNER_RESULT_URL", "redis://results:6379/1")
    get_settings.cache_clear()
    assert get_settings().effective_result_url == "redis://results:6379/1"


# The JOBRUNNER_CONFIG file


def test_file_overrides_and_deep_merges(config_file: Callable[[str], Path]) -> None:
    config_file("default_tier = 'low'\n[flower]\nport = 6000\n[limits]\nresult_expires = 60\n")
    settings = get_settings()
    assert settings.default_tier == "low"
    assert settings.flower.port == 6000
    assert settings.limits.result_expires == 60
    # The rest of each section, and every other section, still come from default.toml
    # (limits fields have no model default: a shallow merge would fail here).
    assert settings.flower.address == "127.0.0.1"
    assert settings.limits.step_time_limit == 1800
    assert settings.limits.payload_max_bytes == 65536
    assert settings.queue("high") == "jobrunner.high"
    assert set(settings.pools) == {"express", "general"}


def test_file_keeps_flower_port_when_setting_address(config_file: Callable[[str], Path]) -> None:
    config_file("[flower]\naddress = '0.0.0.0'\n")
    settings = get_settings()
    assert settings.flower.address == "0.0.0.0"
    assert settings.flower.port == 5555


def test_file_pool_setting_keeps_the_pool_other_keys(config_file: Callable[[str], Path]) -> None:
    config_file("[pools.general]\nconcurrency = 4\n")
    settings = get_settings()
    assert settings.pools["general"].concurrency == 4
    assert settings.pools["general"].tiers == ["high", "medium", "low"]
    assert settings.pools["express"].concurrency == 1


def test_file_adds_a_pool(config_file: Callable[[str], Path]) -> None:
    config_file("[pools.batch]\ntiers = ['low']\nconcurrency = 2\n")
    settings = get_settings()
    assert settings.pool("batch").tiers == ["low"]
    assert settings.pool("batch").concurrency == 2
    assert set(settings.pools) == {"express", "general", "batch"}


# JOBRUNNER_* variables


def test_env_nested_flower_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_FLOWER__PORT", "7000")
    settings = get_settings()
    assert settings.flower.port == 7000
    assert settings.flower.address == "127.0.0.1"


def test_env_nested_pool_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_POOLS__GENERAL__CONCURRENCY", "2")
    settings = get_settings()
    assert settings.pools["general"].concurrency == 2
    assert settings.pools["general"].tiers == ["high", "medium", "low"]
    assert settings.pools["express"].concurrency == 1
    assert settings.pools["express"].tiers == ["high"]


def test_env_top_level_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_DEFAULT_TIER", "high")
    monkeypatch.setenv("JOBRUNNER_DATA_DIR", "/srv/jobrunner")
    settings = get_settings()
    assert settings.default_tier == "high"
    assert settings.data_dir == Path("/srv/jobrunner")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a.b, c", ["a.b", "c"]),
        ("a.b,c", ["a.b", "c"]),
        (" tests.support.steps ", ["tests.support.steps"]),
        ("a.b, ,c,", ["a.b", "c"]),
        ("", []),
    ],
)
def test_env_imports_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("JOBRUNNER_IMPORTS", value)
    assert get_settings().imports == expected


def test_env_pipeline_dirs_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_PIPELINE_DIRS", "/a/pipes, rel/pipes")
    assert get_settings().pipeline_dirs == [Path("/a/pipes"), Path("rel/pipes")]


def test_env_beats_file(
    monkeypatch: pytest.MonkeyPatch, config_file: Callable[[str], Path]
) -> None:
    config_file("imports = ['from.file']\n[flower]\nport = 6000\naddress = '0.0.0.0'\n")
    monkeypatch.setenv("JOBRUNNER_FLOWER__PORT", "7000")
    monkeypatch.setenv("JOBRUNNER_IMPORTS", "from.env")
    settings = get_settings()
    assert settings.flower.port == 7000
    assert settings.flower.address == "0.0.0.0"  # from the file, not overridden by env
    assert settings.imports == ["from.env"]


# Bad configuration: one line naming the key


@pytest.mark.parametrize("value", ["0", "-1", "-8"])
def test_concurrency_below_one(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JOBRUNNER_POOLS__GENERAL__CONCURRENCY", value)
    message = load_error()
    assert "pools.general.concurrency" in message
    assert value in message


def test_concurrency_below_one_in_file(config_file: Callable[[str], Path]) -> None:
    config_file("[pools.express]\nconcurrency = 0\n")
    assert "pools.express.concurrency" in load_error()


def test_unknown_tier_in_pool(config_file: Callable[[str], Path]) -> None:
    config_file("[pools.express]\ntiers = ['urgent']\n")
    message = load_error()
    assert "pools.express.tiers" in message
    assert "'high', 'medium' or 'low'" in message


@pytest.mark.parametrize("tiers", [["low", "high"], ["medium", "high", "low"], ["high", "high"]])
def test_pool_tiers_not_highest_first(config_file: Callable[[str], Path], tiers: list[str]) -> None:
    config_file(f"[pools.general]\ntiers = {tiers!r}\n")
    message = load_error()
    assert "pools.general.tiers" in message


def test_pool_tiers_order_message(config_file: Callable[[str], Path]) -> None:
    config_file("[pools.general]\ntiers = ['low', 'medium', 'high']\n")
    assert "highest first" in load_error()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("brokr_url = 'redis://x'\n", "brokr_url"),
        ("[flower]\nprot = 6000\n", "flower.prot"),
        ("[limits]\nstep_time_limt = 10\n", "limits.step_time_limt"),
        ("[pools.general]\nconcurency = 2\n", "pools.general.concurency"),
        ("[tiers.high]\nqueue = 'q'\nname = 'x'\n", "tiers.high.name"),
    ],
)
def test_typo_key_in_file(config_file: Callable[[str], Path], text: str, key: str) -> None:
    config_file(text)
    message = load_error()
    assert key in message
    assert "Extra inputs are not permitted" in message


def test_typo_nested_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_FLOWER__PROT", "6000")
    assert "flower.prot" in load_error()


def test_config_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.toml"
    monkeypatch.setenv("JOBRUNNER_CONFIG", str(missing))
    message = load_error()
    assert str(missing) in message
    assert "JOBRUNNER_CONFIG" in message


def test_config_file_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_CONFIG", str(tmp_path))
    assert str(tmp_path) in load_error()


def test_config_file_malformed(config_file: Callable[[str], Path]) -> None:
    path = config_file("[flower\nport = \n")
    assert load_error().startswith(f"JOBRUNNER_CONFIG file {path}: ")


@pytest.mark.parametrize("variable", ["JOBRUNNER_BROKR_URL", "JOBRUNNER_FLOWR__PORT"])
def test_misspelt_variable_is_an_error(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "x")
    assert load_error() == f"{variable} names no setting (see config/default.toml)"


def test_unparsable_variable_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_POOLS__GENERAL__TIERS", "high,low")
    message = load_error()
    assert message.startswith("bad configuration: ") and '"pools"' in message


@pytest.mark.parametrize(("soft", "hard"), [(1800, 1800), (2000, 1800), (61, 60)])
def test_soft_time_limit_not_below_hard(
    config_file: Callable[[str], Path], soft: int, hard: int
) -> None:
    config_file(f"[limits]\nstep_soft_time_limit = {soft}\nstep_time_limit = {hard}\n")
    message = load_error()
    assert "limits" in message
    assert "step_soft_time_limit" in message


def test_soft_time_limit_below_hard_is_fine(config_file: Callable[[str], Path]) -> None:
    config_file("[limits]\nstep_soft_time_limit = 59\nstep_time_limit = 60\n")
    assert get_settings().limits.step_time_limit == 60


def test_tier_no_pool_serves(config_file: Callable[[str], Path]) -> None:
    config_file("[pools.general]\ntiers = ['high', 'medium']\n")
    message = load_error()
    assert "no pool serves tier low" in message
    assert "medium" not in message.split("no pool serves tier", 1)[1]


def test_tiers_sharing_a_queue(config_file: Callable[[str], Path]) -> None:
    config_file("[tiers.low]\nqueue = 'jobrunner.high'\n")
    message = load_error()
    assert "tiers" in message
    assert "own queue" in message


def test_bad_default_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_DEFAULT_TIER", "urgent")
    assert "default_tier" in load_error()


def test_flower_port_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_FLOWER__PORT", "70000")
    assert "flower.port" in load_error()


def test_several_errors_are_counted_on_one_line(config_file: Callable[[str], Path]) -> None:
    config_file("typo_one = 1\ntypo_two = 2\n")
    assert "(and 1 more)" in load_error()


# Derived names


def test_queue_of_unknown_tier_names_the_valid_tiers() -> None:
    settings = get_settings()
    with pytest.raises(ConfigError) as caught:
        settings.queue("urgent")
    message = str(caught.value)
    assert "'urgent'" in message
    assert "high, medium, low" in message


def test_unknown_pool_names_the_configured_pools() -> None:
    with pytest.raises(ConfigError, match=r"'gpu'.*express, general"):
        get_settings().pool("gpu")


def test_settings_are_frozen() -> None:
    settings = get_settings()
    assert isinstance(settings, Settings)
    with pytest.raises(ValueError, match="frozen"):
        settings.default_tier = "high"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("amqp://guest@localhost//", "must be a redis:// or rediss:// URL, got amqp://"),
        ("rediss://:pw@redis.example:6380/0", "a rediss:// URL needs ?ssl_cert_reqs=required"),
    ],
)
def test_broker_url_must_be_redis_with_tls_options(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", url)
    assert message in load_error()


def test_tls_url_reaches_celery_and_redis_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """One rediss:// URL carries TLS to every client: Celery's broker and result backend (which
    refuse rediss without ssl_cert_reqs) and jobrunner's own redis-py clients."""
    import ssl

    from jobrunner.worker.app import create_app
    from jobrunner.worker.broker.connection import client

    url = "rediss://:pw@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem"
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", url)
    settings = get_settings()
    app = create_app(settings, set_as_current=False)
    assert app.backend.connparams["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert app.backend.connparams["ssl_ca_certs"] == "/etc/ca.pem"
    kwargs = client(settings.broker_url).connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    with app.connection_for_write() as connection:  # builds the transport without connecting
        assert (
            connection.transport_cls == "jobrunner.worker.broker.transport:Transport"
        )  # reliable fetch ...
        assert connection.ssl["ssl_cert_reqs"] == ssl.CERT_REQUIRED  # ... over TLS
