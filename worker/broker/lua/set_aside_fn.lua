-- set_aside(): keep a refused message for a person (worker/broker/set_aside.py). Defines a
-- function for the scripts that follow it (fetch.lua, set_aside.lua); runs nothing itself.
-- index: the set-aside sorted set; seq: its id counter; prefix: the entry hash prefix.
-- Returns the new entry's id.
local function set_aside(index, seq, prefix, now, reason, queue, message)
  local id = redis.call('INCR', seq)
  redis.call('HSET', prefix .. id, 'reason', reason, 'queue', queue, 'message', message,
    'time', now)
  redis.call('ZADD', index, now, id)
  return id
end
