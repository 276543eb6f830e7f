"""The one exception family jobrunner reports to users as a single line."""

import json

from pydantic import ValidationError


class JobrunnerError(Exception):
    """An error whose message is complete and fit for one line on stderr."""


class ConfigError(JobrunnerError):
    """The configuration (TOML file, environment) is invalid."""


def first_error(error: ValidationError, where: str) -> str:
    """A pydantic error as one line: the first problem's location and message (`where` when it
    has no location), and how many more there are. Odd keys are quoted, so a key holding a
    newline cannot break the line."""
    first = error.errors()[0]
    parts = [
        str(part) if isinstance(part, int) or str(part).isidentifier() else json.dumps(str(part))
        for part in first["loc"]
    ]
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{'.'.join(parts) or where}: {' '.join(first['msg'].split())}{more}"
