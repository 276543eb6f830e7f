"""The runtime: Celery app, pools, embedded Redis, job tracking, CLI and client API."""
