"""The worker runtime: the consumer bootstep, admission, headroom, autoscaler, pools, starvation
guard, job tracking, result backend and remote submission. Loaded by Celery in workers."""
