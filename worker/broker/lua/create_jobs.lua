-- Record a chunk of submitted jobs (Client.submit_many) in one call, atomically: every record,
-- both indexes and the submitted counter, or (the script failing before its first write) none.
-- The fields all records share are sent once, and a record's key is made here from its job id
-- (as fetch.lua makes set-aside keys), so a job costs two arguments.
-- KEYS: all jobs by submission time, unfinished jobs by deadline, the metrics hash.
-- ARGV: the record key prefix, submitted at, deadline at, the metrics field, n (shared field
-- count), n field/value pairs, then per job its id and its payload.
local prefix, submitted, deadline = ARGV[1], ARGV[2], ARGV[3]
local n = tonumber(ARGV[5])
local shared = {}
for i = 1, 2 * n do shared[i] = ARGV[5 + i] end
local count = 0
local by_submission, by_deadline = {}, {}
-- Both indexes take their members a thousand at a time (unpack's stack is limited).
local function index()
  if #by_submission > 0 then
    redis.call('ZADD', KEYS[1], unpack(by_submission))
    redis.call('ZADD', KEYS[2], unpack(by_deadline))
    by_submission, by_deadline = {}, {}
  end
end
for at = 6 + 2 * n, #ARGV, 2 do
  redis.call('HSET', prefix .. ARGV[at], 'payload', ARGV[at + 1], unpack(shared))
  local last = #by_submission
  by_submission[last + 1], by_submission[last + 2] = submitted, ARGV[at]
  by_deadline[last + 1], by_deadline[last + 2] = deadline, ARGV[at]
  count = count + 1
  if count % 1000 == 0 then index() end
end
index()
redis.call('HINCRBY', KEYS[3], ARGV[4], count)
return count
