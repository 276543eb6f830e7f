"""Asks the installed jobrunner what to run, so the roles never hard-code a pool, queue or port.

Reads a JSON request on stdin (the inventory's config overrides, the deployment's own keys, the
host's facts) and prints JSON: the host's config file as TOML, and the plan taken from it: per
pool the node name, queues and `celery worker` options; the app version; how long a warm stop
may take. Pool sizes left at "auto" are computed from the facts with the app's own rule
(jobrunner.worker.runtime.headroom.auto_concurrency), and the rendered config is validated the
way a worker validates it at start, so a bad inventory fails the deploy before anything restarts.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import tomllib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

STOP_MARGIN_S = 60  # beyond the hard step time limit: the pool itself needs a moment to exit
MONITORS = ("flower", "metrics", "api")  # config sections of the services on `monitor` hosts
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
HEADER = "# Managed by Ansible (jobrunner playbooks): local edits are overwritten.\n"


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def pool_sizes(merged: dict[str, Any], request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-host override, else the config's number, else `auto` from the facts."""
    from jobrunner.worker.runtime.headroom import auto_concurrency

    admission = merged["admission"]
    overrides = request.get("concurrency") or {}
    pools = {}
    for name, pool in merged["pools"].items():
        wanted = overrides.get(name, pool.get("concurrency", "auto"))
        if wanted == "auto":
            process_mb = pool.get("max_memory_per_child_mb") or admission["process_memory_mb"]
            wanted = auto_concurrency(
                int(request["cpus"]),
                int(request["memory_mb"]),
                int(admission["memory_reserve_mb"]),
                int(process_mb),
            )
        pools[name] = {**pool, "concurrency": int(wanted)}
    return pools


def _key(key: str) -> str:
    return key if BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML: {value!r}")


def to_toml(data: dict[str, Any], path: tuple[str, ...] = ()) -> list[str]:
    """Plain keys first, then one [table] per nested mapping, keys in their given order."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            sub = (*path, _key(key))
            body = to_toml(value, sub)
            if not value or any(not isinstance(v, dict) for v in value.values()):
                lines += ["", f"[{'.'.join(sub)}]"]
            lines += body
    return lines


def plan(host: str) -> dict[str, Any]:
    from jobrunner.config import get_settings
    from jobrunner.tasks.registry import load_pipelines
    from jobrunner.worker.runtime.pools import worker_argv

    get_settings.cache_clear()
    settings = get_settings()
    load_pipelines(settings)  # a missing step module or a bad pipeline fails the deploy here
    pools = {}
    for name in settings.pools:
        node = f"{name}@{host}"
        argv = worker_argv(settings, name, node)
        # `celery multi` takes the app and the node name itself; keep the worker options.
        options = [a for a in argv[argv.index("worker") + 1 :] if not a.startswith("--hostname=")]
        pools[name] = {"node": node, "queues": settings.pool_queues(name), "options": options}
    try:
        app_version = version("jobrunner")
    except PackageNotFoundError:
        app_version = "unknown"
    return {
        "version": app_version,
        "pools": pools,
        "stop_timeout": settings.limits.step_time_limit + STOP_MARGIN_S,
        "monitors": {
            name: {"address": getattr(settings, name).address, "port": getattr(settings, name).port}
            for name in MONITORS
        },
        # Exported to workers as `jobrunner worker` does, for steps that read it.
        "broker_url": settings.broker_url,
    }


def monitor_settings(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per monitor, the inventory's address and port where given, and its credentials on
    `monitor` hosts only (worker hosts never hold them)."""
    on_monitor_host = str(request.get("monitor_host")).lower() == "true"
    chosen: dict[str, dict[str, Any]] = {}
    for name, given in (request.get("monitors") or {}).items():
        keep = {
            key: int(value) if key == "port" else value
            for key, value in given.items()
            if value not in ("", None) and (key != "basic_auth" or on_monitor_host)
        }
        if keep:
            chosen[name] = keep
    return chosen


def render(request: dict[str, Any]) -> dict[str, Any]:
    from jobrunner.config.settings import DEFAULT_TOML

    defaults = tomllib.loads(DEFAULT_TOML.read_text(encoding="utf-8"))
    config = request.get("config") or {}
    merged = merge(defaults, config)
    document = merge(
        merge(merge(config, request.get("set") or {}), monitor_settings(request)),
        {"pools": pool_sizes(merged, request)},
    )
    text = HEADER + f"# jobrunner config of {request['host']}.\n" + "\n".join(to_toml(document))
    text += "\n"
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(text)
    previous = os.environ.get("JOBRUNNER_CONFIG")
    os.environ["JOBRUNNER_CONFIG"] = handle.name
    try:
        return {"toml": text, "plan": plan(request["host"])}
    finally:
        os.unlink(handle.name)
        if previous is None:
            del os.environ["JOBRUNNER_CONFIG"]
        else:
            os.environ["JOBRUNNER_CONFIG"] = previous


def main() -> None:
    try:
        result = render(json.load(sys.stdin))
    except Exception as error:  # one line for the deploy report, not a traceback
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
