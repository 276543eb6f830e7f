-- One run of one of a job's tasks for its step tree (worker/store/jobs.py), kept while the job
-- may still run (finishing the job sets its usual expiry).
-- KEYS: the job's steps list. ARGV: the entry (JSON), its expiry in seconds.
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
