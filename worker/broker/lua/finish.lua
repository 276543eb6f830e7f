-- A job's outcome, recorded once: the first writer wins (worker/store/jobs.py), after
-- observe.lua. Counts the outcome, observes the run time and the data flow per step.
-- KEYS: the open-jobs index, the metrics hash, then every JobKeys (record first, done list
-- second). ARGV: now, state, field, value, ttl, job id, outcome ("succeeded", "failed" or
-- "cancelled"), the final task's step-tree entry ('' for none), n, the n run bucket bounds,
-- then (step, rows in, rows out, quarantined) per step of a data pipeline.
if ARGV[8] ~= '' then redis.call('RPUSH', KEYS[7], ARGV[8]) end
if redis.call('HSETNX', KEYS[3], 'finished_at', ARGV[1]) == 0 then
  redis.call('EXPIRE', KEYS[7], ARGV[5])
  return 0
end
redis.call('HSET', KEYS[3], 'state', ARGV[2], ARGV[3], ARGV[4])
redis.call('RPUSH', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[6])
for i = 3, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
local job = redis.call('HMGET', KEYS[3], 'pipeline', 'tier', 'started_at')
if not (job[1] and job[2]) then return 1 end
redis.call('HINCRBY', KEYS[2], 'jobs|' .. ARGV[7] .. '|' .. job[1] .. '|' .. job[2], 1)
local n = tonumber(ARGV[9])
if job[3] then observe(KEYS[2], 'run|' .. job[2], tonumber(ARGV[1]) - tonumber(job[3]), 10, n) end
for i = 10 + n, #ARGV, 4 do
  local step = '|' .. job[1] .. '|' .. ARGV[i]
  redis.call('HINCRBY', KEYS[2], 'rows_in' .. step, ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], 'rows_out' .. step, ARGV[i + 2])
  redis.call('HINCRBY', KEYS[2], 'rows_quarantined' .. step, ARGV[i + 3])
end
return 1
