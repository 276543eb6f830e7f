"""What a client accepts before anything is written: a payload that round-trips as UTF-8 JSON,
an idempotency key and a deadline of the right form, a job id of the one form jobs have.

A payload that JSON cannot carry unchanged (a lone surrogate, NaN, a 10,000-level nesting, a
5,000-digit number) would be accepted and then break whatever reads it later (the dead-letter
write, `jobrunner status`); each is refused here with one line instead.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from jobrunner.tasks.errors import PayloadError

MAX_DEPTH = 32  # nesting of objects and lists in a payload
MAX_DIGITS = 64  # of an integer in a payload (an int64 has 19)
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
JOB_ID = re.compile(r"[0-9a-f]{32}")  # what a client names a job: uuid4().hex


def is_job_id(text: object) -> bool:
    return isinstance(text, str) and JOB_ID.fullmatch(text) is not None


def _problem(value: Any) -> str | None:
    """What in `value` JSON cannot carry unchanged, or None. Walks without recursion, so a
    deep value costs a loop, not a RecursionError."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > MAX_DEPTH:
                return f"is nested deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    return "has an object key that is not a string"
                stack.extend((key, depth) for key in item)
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "holds a string that is not valid UTF-8 (a lone surrogate)"
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if item and math.log10(abs(item)) >= MAX_DIGITS:
                return f"holds an integer longer than {MAX_DIGITS} digits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"holds {item!r}, which JSON cannot carry"
        else:
            return f"holds a {type(item).__name__}, which JSON cannot carry"
    return None


def check_json(value: Any, what: str) -> None:
    """PayloadError (one line naming `what`) unless `value` round-trips as UTF-8 JSON."""
    problem = _problem(value)
    if problem is not None:
        raise PayloadError(f"{what} {problem}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str, what: str) -> Any:
    """`text` parsed as JSON and checked as `check_json` does; PayloadError (one line) if not."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        detail = str(error) if isinstance(error, ValueError) else "nested too deeply"
        raise PayloadError(f"{what} is not valid JSON: {detail[:200]}") from None
    check_json(value, what)
    return value


def check_idempotency_key(key: str) -> None:
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
        raise PayloadError(f"idempotency key must match {IDEMPOTENCY_KEY.pattern} in full")


def check_deadline(deadline_s: float) -> None:
    if not (math.isfinite(deadline_s) and deadline_s > 0):
        raise PayloadError(f"deadline must be a finite number of seconds above 0, got {deadline_s}")
