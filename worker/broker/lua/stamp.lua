-- Stamp an unstamped message in place (worker/runtime/promotion.py), if it is still the one
-- inspected at the queue's right end.
-- KEYS: queue. ARGV: the element inspected at its right end, its stamped rewrite.
if redis.call('LINDEX', KEYS[1], -1) ~= ARGV[1] then return 0 end
redis.call('LSET', KEYS[1], -1, ARGV[2])
return 1
