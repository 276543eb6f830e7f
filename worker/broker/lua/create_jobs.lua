-- Record a chunk of submitted jobs (Client.submit_many) in one call, atomically: every record,
-- both indexes and the submitted counter, or (the script failing before its first write) none.
-- The fields all records share are sent once, so a job costs three arguments.
-- KEYS: all jobs by submission time, unfinished jobs by deadline, the metrics hash, then one
-- record key per job.
-- ARGV: submitted at, deadline at, the metrics field, n (shared field count), n field/value
-- pairs, then per job (in KEYS order) its id and its payload.
local submitted, deadline = ARGV[1], ARGV[2]
local n = tonumber(ARGV[4])
local shared = {}
for i = 1, 2 * n do shared[i] = ARGV[4 + i] end
local first = 4 + 2 * n
for i = 4, #KEYS do
  local at = first + 2 * (i - 4)
  redis.call('HSET', KEYS[i], 'payload', ARGV[at + 2], unpack(shared))
  redis.call('ZADD', KEYS[1], submitted, ARGV[at + 1])
  redis.call('ZADD', KEYS[2], deadline, ARGV[at + 1])
end
redis.call('HINCRBY', KEYS[3], ARGV[3], #KEYS - 3)
return #KEYS - 3
