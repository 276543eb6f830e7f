-- move_aside(): a key of jobrunner's or kombu's that holds another type than it must, written by
-- some other client, would make every command on it fail and so stop the worker. Rename it under
-- the set-aside prefix instead, kept as it was for a person to inspect
-- (worker/broker/transport.py). Defines a function for the scripts that follow it (fetch.lua,
-- move_aside.lua); runs nothing itself.
-- seq: the set-aside id counter (a fresh id keeps two renames of one key apart); prefix: where
-- renamed keys go; kind: the type the key must have (a queue or its wake list: 'list'); moved:
-- the list that gets {key, new name} appended for the worker's log. Returns the new name, or
-- false when the key has that type or is absent.
local function move_aside(seq, prefix, key, kind, moved)
  local found = redis.call('TYPE', key)['ok']
  if found == kind or found == 'none' then return false end
  local renamed = prefix .. redis.call('INCR', seq) .. ':' .. key
  redis.call('RENAME', key, renamed)
  moved[#moved + 1] = key
  moved[#moved + 1] = renamed
  return renamed
end
