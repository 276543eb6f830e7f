"""The worker runtime: the consumer bootsteps (consumer/), admission, headroom, autoscaler,
pools, starvation guard, job tracking, result backend and remote submission. Celery loads it in
workers."""
