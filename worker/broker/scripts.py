"""The Lua scripts jobrunner runs in Redis: one `.lua` file each in worker/broker/lua/ (installed
as package data), its KEYS and ARGV described at its top."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


@cache
def load(name: str) -> str:
    """The source of lua/`name`.lua."""
    return (files("jobrunner.worker.broker") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Call:
    """One run of a registered script: what several writers send in one round trip."""

    script: Script
    keys: list[str]
    args: list[Any]

    def run(self, client: redis.Redis | None = None) -> Any:
        """Run it now, alone (on the script's own client unless given another)."""
        return self.script(keys=self.keys, args=self.args, client=client)


def call_all(client: redis.Redis, calls: Sequence[Call]) -> list[Any]:
    """Run `calls` in one pipeline, in order; each call's reply, or the error it raised (so one
    writer's failure is that writer's to handle). EVALSHA by hand: redis-py's own script calls
    in a pipeline first ask SCRIPT EXISTS, a second round trip. A script Redis lost (a restart)
    is loaded and that call alone run again, so no other call runs twice."""
    with client.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies = pipe.execute(raise_on_error=False)
    for i, (call, reply) in enumerate(zip(calls, replies, strict=True)):
        if isinstance(reply, NoScriptError):
            try:
                replies[i] = call.run(client)
            except redis.RedisError as error:
                replies[i] = error
    return replies
