-- A step run's start (worker/store/jobs.py), after observe.lua: one round trip that both checks
-- the job has not finished (a step of a finished job is not run) and, for the job's first step,
-- stamps started_at (the first time only) and observes the job's wait in its tier's histogram.
-- KEYS: record, metrics. ARGV: now, 1 if this is the job's first step else 0, then the wait
-- bucket bounds. Returns the job's final state if it has one, else false.
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
if ARGV[2] == '1' and redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1]) == 1 then
  local job = redis.call('HMGET', KEYS[1], 'submitted_at', 'tier')
  if job[1] and job[2] then
    observe(KEYS[2], 'wait|' .. job[2], tonumber(ARGV[1]) - tonumber(job[1]), 3, #ARGV - 2)
  end
end
return false
