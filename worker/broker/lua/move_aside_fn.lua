-- move_aside(): a key that must be a list (a queue or its wake list) but holds another type,
-- written by some other client, would make every command on it fail and so stop the worker.
-- Rename it under the set-aside prefix instead, kept as it was for a person to inspect
-- (worker/broker/transport.py). Defines a function for the scripts that follow it (fetch.lua,
-- move_aside.lua); runs nothing itself.
-- seq: the set-aside id counter (a fresh id keeps two renames of one key apart); prefix: where
-- renamed keys go. Returns the new name, or false when the key is a list or absent.
local function move_aside(seq, prefix, key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'list' or kind == 'none' then return false end
  local renamed = prefix .. redis.call('INCR', seq) .. ':' .. key
  redis.call('RENAME', key, renamed)
  return renamed
end
