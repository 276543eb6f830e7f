"""Pipelines that start themselves: schedules fired by `jobrunner scheduler` (celery beat with a
Redis lock), and backfills of a schedule's past firings."""
