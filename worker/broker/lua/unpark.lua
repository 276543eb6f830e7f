-- Resume a paused pipeline (worker/store/control.py): every parked message ("routing key\n
-- payload", park.lua) goes back to the end of its queue (jobrunner's queues are bound by their
-- own names) with a wake token beside it, as a publish leaves it.
-- KEYS: the parked list. ARGV: the wake-list prefix, the token. Returns how many went back.
local n = 0
while true do
  local entry = redis.call('RPOP', KEYS[1])
  if not entry then return n end
  local cut = string.find(entry, '\n', 1, true)
  local queue = string.sub(entry, 1, cut - 1)
  redis.call('LPUSH', queue, string.sub(entry, cut + 1))
  redis.call('LPUSH', ARGV[1] .. queue, ARGV[2])
  n = n + 1
end
