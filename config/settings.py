"""Typed settings: config/default.toml < the JOBRUNNER_CONFIG file < JOBRUNNER_* variables.

Every name the rest of the code uses (tiers, queues, pools, ports, URLs) comes from here.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from jobrunner.config.errors import ConfigError, first_error

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


RESOURCE_CLASS = r"^[a-z][a-z0-9_]{0,31}$"


class PoolSettings(_Section):
    tiers: list[Tier] = Field(min_length=1, description="tiers consumed, highest first")
    concurrency: int | Literal["auto"] = Field(
        default="auto", description="processes (the most, when autoscaling); auto: from CPUs/memory"
    )
    min_concurrency: int | None = Field(
        default=None, ge=1, description="below concurrency: autoscale between the two by headroom"
    )
    max_memory_per_child_mb: int | None = Field(
        default=None, gt=0, description="replace a process once its memory passes this"
    )
    resources: list[Annotated[str, Field(pattern=RESOURCE_CLASS)]] = Field(
        default_factory=list, description="resource classes served besides plain steps"
    )

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

    @model_validator(mode="after")
    def _min_below_max(self) -> PoolSettings:
        if (
            self.min_concurrency is not None
            and isinstance(self.concurrency, int)
            and self.min_concurrency > self.concurrency
        ):
            raise ValueError(
                f"min_concurrency {self.min_concurrency} is above concurrency {self.concurrency}"
            )
        return self


class FlowerSettings(_Section):
    """Flower is never served without authentication: basic auth, or OAuth (passed through)."""

    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    basic_auth: str = Field(default="", description="user:password; empty = generated locally")
    auth_provider: str = Field(default="", description="Flower OAuth handler class; empty = off")
    auth: str = Field(default="", description="OAuth: regex of the e-mails allowed in")
    oauth2_key: str = Field(default="", description="OAuth client id")
    oauth2_secret: str = Field(default="", description="OAuth client secret")
    oauth2_redirect_uri: str = Field(default="", description="OAuth callback URL")
    bulk_sent_events: bool = Field(
        default=False, description="submit_many sends task-sent events (else shown at start)"
    )


class MetricsSettings(_Section):
    """The Prometheus exporter (`jobrunner metrics`): never served without authentication."""

    address: str = Field(min_length=1, description="interface to bind; 127.0.0.1 = this host only")
    port: int = Field(ge=1, le=65535, description="HTTP port serving /metrics")
    basic_auth: str = Field(default="", description="user:password; empty = generated locally")
    wait_buckets_s: list[float] = Field(min_length=1, description="wait-time histogram bounds")
    run_buckets_s: list[float] = Field(min_length=1, description="run-time histogram bounds")
    step_metrics_max: int = Field(ge=0, description="names one step run may report (ctx.metric)")

    @field_validator("wait_buckets_s", "run_buckets_s")
    @classmethod
    def _increasing(cls, bounds: list[float]) -> list[float]:
        if any(b <= a for a, b in pairwise(bounds)) or bounds[0] <= 0:
            raise ValueError(f"histogram bounds must be positive and increasing, got {bounds}")
        return bounds


class ApiSettings(_Section):
    """The HTTP API (`jobrunner api`): every route but /health needs a bearer token."""

    address: str = Field(min_length=1, description="interface to bind; 127.0.0.1 = this host only")
    port: int = Field(ge=1, le=65535, description="HTTP(S) port")
    tls_certfile: str = Field(default="", description="PEM certificate; set with tls_keyfile")
    tls_keyfile: str = Field(default="", description="PEM private key; empty = plain HTTP")
    max_wait_s: float = Field(gt=0, description="longest long-poll (?wait=) one request may hold")
    max_batch: int = Field(ge=1, description="most jobs one POST /jobs:batch may submit")

    @model_validator(mode="after")
    def _both_or_neither(self) -> ApiSettings:
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("api.tls_certfile and api.tls_keyfile go together")
        return self


class SecuritySettings(_Section):
    """Encryption at rest and the audit trail."""

    payload_key: str = Field(
        default="", description="Fernet key(s), newest first, comma-separated; empty = clear"
    )
    payload_key_file: str = Field(default="", description="file of Fernet keys, one a line")
    audit_retention_days: float = Field(gt=0, description="audit entries older than this go")


class AlertRule(_Section):
    """One condition the exporter checks every `alerts.interval_s`; see config/default.toml."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="label of the alert metric")
    kind: Literal["failure_rate", "oldest_wait", "memory_headroom"]
    threshold: float = Field(
        ge=0, description="failure_rate: fraction; oldest_wait: seconds; memory_headroom: MB"
    )
    window_s: float = Field(default=300, gt=0, description="failure_rate: look-back window")
    min_jobs: int = Field(default=1, ge=1, description="failure_rate: finished jobs needed")
    tier: Tier | None = Field(default=None, description="only this tier (oldest_wait: required)")
    pipeline: str | None = Field(default=None, description="failure_rate: only this pipeline")

    @model_validator(mode="after")
    def _tier_for_wait(self) -> AlertRule:
        if self.kind == "oldest_wait" and self.tier is None:
            raise ValueError(f"alert rule {self.name}: oldest_wait needs a tier")
        return self


class AnomalySettings(_Section):
    """Each step run against that step's own last `history` runs: median and MAD, no threshold."""

    enabled: bool
    history: int = Field(ge=3, description="runs kept per step and measure")
    min_runs: int = Field(ge=3, description="runs needed before a step is judged")
    tolerance: float = Field(gt=0, description="scaled MADs from the median that count as odd")
    min_spread: float = Field(ge=0, description="spread floor, a fraction of the median")


class AlertSettings(_Section):
    """Alert rules, evaluated in one place: the metrics exporter's loop."""

    interval_s: float = Field(gt=0, description="how often the rules are evaluated")
    webhook_url: str = Field(default="", description="POST fired/cleared alerts here; empty = off")
    webhook_timeout_s: float = Field(gt=0, description="give up on the webhook after this long")
    rules: list[AlertRule] = Field(default_factory=list)
    anomaly: AnomalySettings

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http(s) URL, got {url!r}")
        return url

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: list[AlertRule]) -> list[AlertRule]:
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ValueError(f"alert rule names repeat: {names}")
        return rules


class LoggingSettings(_Section):
    """How every jobrunner process writes its log lines (workers, exporter, CLI, Celery's own)."""

    format: Literal["text", "json"] = Field(description="json: one object a line, for ELK/Splunk")


class TracingSettings(_Section):
    """OpenTelemetry traces, one per job (worker/monitoring/tracing.py); off unless an endpoint
    is set here or in the standard OTEL_EXPORTER_OTLP_ENDPOINT."""

    endpoint: str = Field(description="OTLP/HTTP collector base URL; empty = off (or OTEL_...)")
    headers: str = Field(description="k=v,k=v sent with every export, e.g. a bearer token")
    service_name: str = Field(min_length=1, description="service.name of the spans")

    @field_validator("endpoint")
    @classmethod
    def _http(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"tracing endpoint must be an http(s) URL, got {url!r}")
        return url


class AdmissionSettings(_Section):
    """A worker takes a step only while the host has the memory and CPU the step declares."""

    enabled: bool
    memory_reserve_mb: int = Field(ge=0, description="available memory never handed to steps")
    max_load_per_cpu: float = Field(gt=0, description="stop taking work above this load average")
    process_memory_mb: int = Field(gt=0, description="budget per process: auto and autoscaling")
    check_interval_s: float = Field(
        gt=0, description="how often held work and headroom are rechecked"
    )


class AutoscaleSettings(_Section):
    keepalive_s: float = Field(gt=0, description="scaling period, and idle time before shrinking")


class StarvationSettings(_Section):
    """A job waiting longer than promote_after_s in low (or medium) moves up one tier."""

    promote_after_s: float = Field(ge=0, description="0 turns promotion off")
    check_interval_s: float = Field(gt=0)


class ReliabilitySettings(_Section):
    """Nothing accepted is lost: crashed work comes back promptly, poison stops looping, and no
    job stays unfinished forever."""

    lease_s: float = Field(ge=2, description="a crashed worker's steps return after this long")
    max_deliveries: int = Field(ge=1, description="deliveries before a step is dead-lettered")
    job_deadline_s: float = Field(gt=0, description="a job unfinished this long after submit fails")
    reaper_interval_s: float = Field(gt=0, description="how often deadlines are checked")


class ResourceLimit(_Section):
    """A shared resource's cap for the whole fleet ([limits.NAME]); steps name it in `uses`."""

    concurrency: int | None = Field(
        default=None, ge=1, description="at most this many steps using it run at once, anywhere"
    )
    rate: str | None = Field(default=None, description='at most this many start, e.g. "100/minute"')

    @field_validator("rate")
    @classmethod
    def _rate(cls, rate: str | None) -> str | None:
        from limits import parse

        if rate is not None:
            try:
                parse(rate)
            except ValueError:
                raise ValueError(f"bad rate {rate!r} (e.g. 100/minute, 5/second)") from None
        return rate


def _table(value: object) -> object:
    """Under [limits], a name that is no setting must be a table (a resource cap): a misspelt
    setting is refused as any unknown key is."""
    if not isinstance(value, dict | ResourceLimit):
        raise PydanticCustomError("extra_forbidden", "Extra inputs are not permitted")
    return value


class LimitSettings(_Section):
    # The other tables under [limits] are fleet-wide resource caps, [limits.NAME].
    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, Annotated[ResourceLimit, BeforeValidator(_table)]] = Field(  # type: ignore[assignment]
        init=False
    )

    payload_max_bytes: int = Field(gt=0)
    step_soft_time_limit: int = Field(gt=0, description="seconds; the step gets an exception")
    step_time_limit: int = Field(gt=0, description="seconds; the process is killed")
    result_expires: int = Field(gt=0, description="seconds a finished job's records are kept")

    @model_validator(mode="after")
    def _soft_below_hard(self) -> LimitSettings:
        if self.step_soft_time_limit >= self.step_time_limit:
            raise ValueError("step_soft_time_limit must be below step_time_limit")
        return self

    @property
    def resources(self) -> dict[str, ResourceLimit]:
        """The fleet-wide resource caps, by resource name."""
        return dict(self.__pydantic_extra__ or {})


DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")
SECONDS_PER = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
SCHEDULE_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # it goes into idempotency keys and Redis keys


def parse_duration(value: str | float) -> float:
    """Seconds in `value`: a number, or a string of one with an optional unit s, m, h or d
    ("90", "90s", "30m", "1.5h", "7 d"); ValueError otherwise. The one duration rule: settings
    and the CLI's options (worker/cli/base.py duration_s) both use it."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return float(value)
    match = DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"{value!r} is not a duration like 90, 30m, 1h or 7d")
    return float(match.group(1)) * SECONDS_PER[match.group(2)]


class ScheduleSettings(_Section):
    """A pipeline submitted on a schedule by `jobrunner scheduler` (worker/scheduling/)."""

    pipeline: str = Field(min_length=1, description="the pipeline each firing submits")
    tier: Tier | None = Field(default=None, description="its tier; none: default_tier")
    cron: str | None = Field(default=None, description="5-field cron, in `timezone`")
    every: float | None = Field(
        default=None, gt=0, description="or seconds between firings, counted from the epoch"
    )
    timezone: str = Field(default="UTC", description="IANA zone of the cron and {scheduled}")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="{scheduled:%Y%m%d} in a string is the firing time"
    )
    overlap: Literal["skip", "allow"] = Field(
        default="skip", description="skip: no firing while the last job is unfinished"
    )
    catch_up: str | float = Field(
        default=0, description="fire runs missed while no scheduler ran, up to this far back"
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, cron: str | None) -> str | None:
        from croniter import croniter

        if cron is not None and not croniter.is_valid(cron):
            raise ValueError(f"bad cron {cron!r} (five fields: minute hour day month weekday)")
        return cron

    @field_validator("timezone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {zone!r}") from None
        return zone

    @field_validator("catch_up")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_clock(self) -> ScheduleSettings:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron and every")
        return self

    @property
    def catch_up_s(self) -> float:
        return parse_duration(self.catch_up)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class TriggerSettings(_Section):
    """A pipeline submitted when files arrive in a folder, watched by `jobrunner scheduler`."""

    watch: str = Field(min_length=1, description="the folder watched: a path or object store URL")
    pattern: str = Field(default="**/*", min_length=1, description="glob of the files, under watch")
    pipeline: str = Field(min_length=1, description="the pipeline each batch submits")
    tier: Tier | None = Field(default=None, description="its tier; none: default_tier")
    payload: dict[str, Any] = Field(default_factory=dict, description="the rest of the payload")
    files_field: str = Field(
        default="files", min_length=1, description="payload key the batch's file paths go under"
    )
    settle_s: float = Field(
        default=5, ge=0, description="a file unchanged (size, mtime) this long is complete"
    )
    batch_s: float = Field(
        default=0, ge=0, description="after a file is complete, wait this long for more, one job"
    )


class SchedulerSettings(_Section):
    """`jobrunner scheduler`: celery beat with a Redis lock (celery-redbeat); any number may run,
    one fires."""

    tick_s: float = Field(gt=0, description="how often due schedules are checked")
    lock_timeout_s: float = Field(
        gt=0, description="a dead scheduler's lock lapses after this; another takes over"
    )


class DataSettings(_Section):
    """Where pipelines may read raw inputs, and how what they write is protected."""

    input_roots: list[str] = Field(
        description="extra roots inputs may be read under (paths or s3://, gs://, az:// prefixes)"
    )
    store_url: str = Field(description="feature store: a path or s3://, gs://, az:// URL")
    work_url: str = Field(description="where steps share work files across hosts; empty: local")
    file_mode: int = Field(ge=0, le=0o777, description="mode of files holding payloads or rows")
    dir_mode: int = Field(ge=0, le=0o777, description="mode of directories holding them")
    failed_work_retention_s: float = Field(gt=0, description="an unfinished job's work dir age")
    cache_ttl_s: float = Field(gt=0, description="a cached step's entry lives this long unused")
    cache_prune_interval_s: float = Field(ge=0, description="each worker prunes the cache; 0: off")


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
    metrics: MetricsSettings
    alerts: AlertSettings
    api: ApiSettings
    security: SecuritySettings
    logging: LoggingSettings
    tracing: TracingSettings
    limits: LimitSettings
    admission: AdmissionSettings
    autoscale: AutoscaleSettings
    starvation: StarvationSettings
    reliability: ReliabilitySettings
    scheduler: SchedulerSettings
    schedules: dict[Annotated[str, Field(pattern=SCHEDULE_NAME)], ScheduleSettings] = Field(
        default_factory=dict, description="[schedules.NAME]: pipelines submitted on a clock"
    )
    triggers: dict[Annotated[str, Field(pattern=SCHEDULE_NAME)], TriggerSettings] = Field(
        default_factory=dict, description="[triggers.NAME]: pipelines submitted as files arrive"
    )
    data: DataSettings

    @field_validator("broker_url", "result_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        """Redis only; TLS options travel in the URL, which Celery and redis-py both read."""
        if not url:
            return url
        scheme = url.split("://", 1)[0]
        if scheme not in ("redis", "rediss"):
            raise ValueError(f"must be a redis:// or rediss:// URL, got {scheme}://")
        if scheme == "rediss" and "ssl_cert_reqs=" not in url:
            raise ValueError(
                "a rediss:// URL needs ?ssl_cert_reqs=required (and &ssl_ca_certs=PATH for a "
                "private CA)"
            )
        return url

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
        """Every tier, and every tier of each resource class, has a pool; else jobs would sit."""
        for resource in (None, *self.resource_classes()):
            served = {
                t
                for pool in self.pools.values()
                if resource is None or resource in pool.resources
                for t in pool.tiers
            }
            unserved = ", ".join(t for t in TIERS if t not in served)
            if unserved and resource:
                raise ValueError(f"resource class {resource!r} has no pool for tier {unserved}")
            if unserved:
                raise ValueError(f"no pool serves tier {unserved}")
        return self

    def resource_classes(self) -> list[str]:
        """Resource classes some pool serves, sorted."""
        return sorted({r for pool in self.pools.values() for r in pool.resources})

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
    def queue(self, tier: str, resource: str | None = None) -> str:
        """The queue of `tier` (for steps needing `resource`, its own queue of that tier).

        An unknown tier, or a resource class no pool serves, is an error, never a default.
        """
        if tier not in self.tiers:
            raise ConfigError(f"unknown tier {tier!r}: choose one of {', '.join(TIERS)}")
        base = self.tiers[tier].queue  # type: ignore[index]
        if resource is None:
            return base
        if resource not in self.resource_classes():
            served = ", ".join(self.resource_classes()) or "none"
            raise ConfigError(
                f"resource class {resource!r} is served by no pool (served: {served})"
            )
        return f"{base}.{resource}"

    def pool_queues(self, name: str) -> list[str]:
        """The queues a pool consumes, in priority order: per tier, its resource queues first
        (only these pools can run them), then the tier's plain queue."""
        pool = self.pool(name)
        return [
            queue
            for tier in pool.tiers
            for queue in (*(self.queue(tier, r) for r in pool.resources), self.queue(tier))
        ]

    def all_queues(self) -> list[str]:
        """Every queue of every tier and resource class, in priority order."""
        return [
            queue
            for tier in TIERS
            for queue in (*(self.queue(tier, r) for r in self.resource_classes()), self.queue(tier))
        ]

    def pool(self, name: str) -> PoolSettings:
        if name not in self.pools:
            raise ConfigError(
                f"unknown pool {name!r}: configured pools are {', '.join(self.pools)}"
            )
        return self.pools[name]

    @property
    def effective_result_url(self) -> str:
        return self.result_url or self.broker_url


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
        raise ConfigError(f"bad configuration: {first_error(error, 'settings')}") from None
    except SettingsError as error:  # a JOBRUNNER_* value that does not parse
        cause = f": {error.__cause__}" if error.__cause__ else ""
        hint = " (list and table values in variables are JSON)"
        raise ConfigError(f"bad configuration: {error}{cause}{hint}") from None
