"""Settings and the Celery configuration built from them. Imports nothing of jobrunner's."""

from jobrunner.config.errors import ConfigError, JobrunnerError
from jobrunner.config.settings import PIPELINES_DIR, TIERS, Settings, Tier, get_settings

__all__ = [
    "PIPELINES_DIR",
    "TIERS",
    "ConfigError",
    "JobrunnerError",
    "Settings",
    "Tier",
    "get_settings",
]
