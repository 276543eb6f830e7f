-- The starvation guard's move (worker/runtime/promotion.py). Moves the k inspected elements only
-- if the source's right end is still exactly what was inspected (a worker may have taken some
-- meanwhile), keeping their order, onto the target's right end (the next-taken end), oldest
-- rightmost; their wake tokens move with them (worker/broker/transport.py), so an idle worker of
-- the target wakes at once.
-- KEYS: source, target, their wake-token lists. ARGV: the token, then the k elements at the
-- source's right end as inspected (in list order), then their k rewrites. Returns k, or 0.
local k = (#ARGV - 1) / 2
local current = redis.call('LRANGE', KEYS[1], -k, -1)
if #current ~= k then return 0 end
for i = 1, k do
  if current[i] ~= ARGV[i + 1] then return 0 end
end
redis.call('LTRIM', KEYS[1], 0, -k - 1)
redis.call('RPUSH', KEYS[2], unpack(ARGV, k + 2, 2 * k + 1))
redis.call('LPOP', KEYS[3], k)
for i = 1, k do redis.call('LPUSH', KEYS[4], ARGV[1]) end
return k
