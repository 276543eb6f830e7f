"""The HTTP API (`jobrunner api`): pipelines, jobs, long-poll, events, dead letters, behind
scoped bearer tokens."""
