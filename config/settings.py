"""Typed settings: config/default.toml < the JOBRUNNER_CONFIG file < JOBRUNNER_* variables.

Every name the rest of the code uses (tiers, queues, pools, ports, URLs) comes from here.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from config.errors import ConfigError

ENV_PREFIX = "JOBRUNNER_"
CONFIG_FILE_VARIABLE = "JOBRUNNER_CONFIG"
DEFAULT_TOML = Path(__file__).with_name("default.toml")
PIPELINES_DIR = Path(__file__).with_name("pipelines")

Tier = Literal["high", "medium", "low"]
# Priority order, highest first. A worker consuming several tiers polls them in this order.
TIERS: tuple[Tier, ...] = ("high", "medium", "low")


class _Section(BaseModel):
    # A typo in a config key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierSettings(_Section):
    queue: str = Field(
        min_length=1, description="Redis list (kombu queue) holding this tier's jobs"
    )


class PoolSettings(_Section):
    tiers: list[Tier] = Field(min_length=1, description="tiers consumed, highest first")
    concurrency: int | Literal["auto"] = "auto"

    @field_validator("tiers")
    @classmethod
    def _tiers_in_priority_order(cls, tiers: list[Tier]) -> list[Tier]:
        if len(set(tiers)) != len(tiers):
            raise ValueError(f"tiers repeat: {tiers}")
        if tiers != sorted(tiers, key=TIERS.index):
            raise ValueError(f"tiers must be listed highest first ({', '.join(TIERS)}): {tiers}")
        return tiers

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"concurrency must be at least 1 or 'auto', got {value}")
        return value


class FlowerSettings(_Section):
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    basic_auth: str = Field(default="", description="user:password; empty = generated locally")


class LimitSettings(_Section):
    payload_max_bytes: int = Field(gt=0)
    step_soft_time_limit: int = Field(gt=0, description="seconds; the step gets an exception")
    step_time_limit: int = Field(gt=0, description="seconds; the process is killed")
    result_expires: int = Field(gt=0, description="seconds a finished job's records are kept")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> LimitSettings:
        if self.step_soft_time_limit >= self.step_time_limit:
            raise ValueError("step_soft_time_limit must be below step_time_limit")
        return self


class Settings(BaseSettings):
    """The whole configuration; build it with `get_settings()`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    broker_url: str = Field(description="redis:// or rediss:// URL; empty = embedded Redis")
    result_url: str = Field(description="result store URL; empty = broker_url")
    data_dir: Path
    imports: Annotated[list[str], NoDecode] = Field(description="extra task modules to load")
    pipeline_dirs: Annotated[list[Path], NoDecode] = Field(description="extra declaration dirs")
    default_tier: Tier
    tiers: dict[Tier, TierSettings]
    pools: dict[str, PoolSettings]
    flower: FlowerSettings
    limits: LimitSettings

    @field_validator("imports", "pipeline_dirs", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("tiers")
    @classmethod
    def _all_tiers(cls, tiers: dict[Tier, TierSettings]) -> dict[Tier, TierSettings]:
        missing = [t for t in TIERS if t not in tiers]
        if missing:
            raise ValueError(f"tiers missing: {', '.join(missing)}")
        queues = [tiers[t].queue for t in TIERS]
        if len(set(queues)) != len(queues):
            raise ValueError(f"each tier needs its own queue, got {queues}")
        return {t: tiers[t] for t in TIERS}

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, pools: dict[str, PoolSettings]) -> dict[str, PoolSettings]:
        if not pools:
            raise ValueError("at least one pool is needed")
        for name in pools:
            if not name.isidentifier():
                raise ValueError(f"pool name {name!r} must be a plain identifier")
        return pools

    @model_validator(mode="after")
    def _every_tier_served(self) -> Settings:
        served = {t for pool in self.pools.values() for t in pool.tiers}
        unserved = [t for t in TIERS if t not in served]
        if unserved:
            raise ValueError(f"no pool serves tier {', '.join(unserved)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [DEFAULT_TOML]
        user_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if user_file:
            path = Path(user_file)
            if not path.is_file():
                raise ConfigError(f"{CONFIG_FILE_VARIABLE} names {path}, which is not a file")
            try:  # parsed here first only to name the file in the error
                tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
                raise ConfigError(f"{CONFIG_FILE_VARIABLE} file {path}: {error}") from None
            files.append(path)
        toml = TomlConfigSettingsSource(settings_cls, toml_file=files, deep_merge=True)
        return (init_settings, env_settings, toml)

    # Derived names, so callers never rebuild them.
    def queue(self, tier: str) -> str:
        """The queue of `tier`; an unknown tier is an error, never a silent default."""
        if tier not in self.tiers:
            raise ConfigError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
        return self.tiers[tier].queue  # type: ignore[index]

    def pool(self, name: str) -> PoolSettings:
        if name not in self.pools:
            raise ConfigError(
                f"unknown pool {name!r}: configured pools are {', '.join(self.pools)}"
            )
        return self.pools[name]

    @property
    def effective_result_url(self) -> str:
        return self.result_url or self.broker_url


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "settings"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"bad configuration: {where}: {first['msg']}{more}"


def _check_variable_names() -> None:
    """pydantic-settings ignores JOBRUNNER_* variables that name no setting; a typo such as
    JOBRUNNER_BROKR_URL would silently leave the default in place, so it is an error here."""
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    for variable in os.environ:
        if variable.startswith(ENV_PREFIX):
            setting = variable.removeprefix(ENV_PREFIX).split("__", 1)[0]
            if setting not in known:
                raise ConfigError(f"{variable} names no setting (see config/default.toml)")


@cache
def get_settings() -> Settings:
    """Load once per process; raises ConfigError with one line naming the bad key."""
    _check_variable_names()
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None
    except SettingsError as error:  # a JOBRUNNER_* value that does not parse
        cause = f": {error.__cause__}" if error.__cause__ else ""
        hint = " (list and table values in variables are JSON)"
        raise ConfigError(f"bad configuration: {error}{cause}{hint}") from None
