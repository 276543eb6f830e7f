-- Record one starvation-guard move on its job (worker/store/jobs.py). Only for a job that
-- exists; a job that already finished (its record expiring) gets the same expiry on the list, so
-- nothing outlives it.
-- KEYS: record, promotions list. ARGV: entry.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
