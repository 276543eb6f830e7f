"""Errors in pipeline declarations and job payloads, reported to users as one line."""

from jobrunner.config.errors import JobrunnerError


class PipelineError(JobrunnerError):
    """A pipeline or step declaration is invalid, or names something unknown."""


class PayloadError(JobrunnerError):
    """A job payload is not valid for its pipeline; nothing was enqueued."""


class PayloadTooLarge(PayloadError):
    """A job payload is over `limits.payload_max_bytes` (HTTP 413)."""
