"""The one exception family jobrunner reports to users as a single line."""


class JobrunnerError(Exception):
    """An error whose message is complete and fit for one line on stderr."""


class ConfigError(JobrunnerError):
    """The configuration (TOML file, environment) is invalid."""
