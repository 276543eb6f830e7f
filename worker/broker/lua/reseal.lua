-- Replace a hash field's sealed value, only if it still holds what was read (worker/store/
-- rekey.py): a record that expired or changed meanwhile is left alone, never re-created.
-- KEYS: the hash. ARGV: field, the value read, the value sealed under the newest key.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
