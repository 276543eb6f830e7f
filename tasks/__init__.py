"""Pipeline steps (Celery tasks) and pipeline declarations compiled to chain/group/chord."""
