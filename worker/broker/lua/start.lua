-- A job's start (worker/store/jobs.py), after observe.lua. The first start only: it stamps
-- started_at and observes the job's wait in its tier's histogram.
-- KEYS: record, metrics. ARGV: now, then the wait bucket bounds.
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1]) == 0 then return 0 end
local job = redis.call('HMGET', KEYS[1], 'submitted_at', 'tier')
if job[1] and job[2] then
  observe(KEYS[2], 'wait|' .. job[2], tonumber(ARGV[1]) - tonumber(job[1]), 2, #ARGV - 1)
end
return 1
