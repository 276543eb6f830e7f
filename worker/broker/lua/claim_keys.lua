-- Bind many idempotency keys at once, each to its own new job unless it is bound already: one
-- round trip for a batch (Client.submit_many), and atomic, so no key is seen free by two batches.
-- KEYS: the idempotency keys (IDEMPOTENCY + key), each once.
-- ARGV[1]: their lifetime in seconds; ARGV[1 + i]: the new job id for KEYS[i].
-- Returns, per key, the job id it was bound to before, or nil where it is now bound to ARGV[1 + i].
local bound = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1 + i], 'NX', 'EX', ARGV[1]) then
    bound[i] = false
  else
    bound[i] = redis.call('GET', key)
  end
end
return bound
