"""The Lua scripts jobrunner runs in Redis: one `.lua` file each in worker/broker/lua/ (installed
as package data), its KEYS and ARGV described at its top."""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def load(name: str) -> str:
    """The source of lua/`name`.lua."""
    return (files("jobrunner.worker.broker") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
