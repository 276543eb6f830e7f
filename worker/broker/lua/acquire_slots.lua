-- Fleet-wide limits (worker/runtime/limits.py): lease one slot of every resource a step uses, all
-- or none. A slot is a member of the resource's sorted set scored by its lease's expiry; lapsed
-- leases (a crashed worker's) are dropped first, so their slots come back.
-- KEYS: one sorted set per resource. ARGV: now, the new lease's expiry, the task id, then each
-- resource's concurrency cap, in KEYS order. Returns 1 if leased (or already held), else 0.
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[1])
  if not redis.call('ZSCORE', KEYS[i], ARGV[3])
    and redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[3 + i]) then
    return 0
  end
end
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3]) end
return 1
