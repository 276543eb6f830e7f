-- Set a refused message aside and drop its lease, in one step (worker/broker/set_aside.py),
-- after set_aside_fn.lua: it is then in the set-aside store and nowhere else.
-- KEYS: set-aside index, id counter, kombu's unacked hash, its index.
-- ARGV: now, reason, queue, the message as it was in its queue, the entry hash prefix.
-- Returns the entry id.
local id = set_aside(KEYS[1], KEYS[2], ARGV[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
local ok, message = pcall(cjson.decode, ARGV[4])
local props = ok and type(message) == 'table' and message['properties']
if type(props) == 'table' and type(props['delivery_tag']) == 'string' then
  redis.call('HDEL', KEYS[3], props['delivery_tag'])
  redis.call('ZREM', KEYS[4], props['delivery_tag'])
end
return id
