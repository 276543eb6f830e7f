-- Park a fetched message of a paused pipeline (worker/broker/transport.py): move it from the
-- unacked hash to the pipeline's parked list, in one step, so it is always in exactly one of the
-- two places. The unacked entry is [payload, exchange, routing key] with the payload's own text
-- inline (as fetch.lua writes it), so the text is cut out rather than decoded and re-encoded
-- (cjson would turn [] into {} and round floats); the parked entry is "routing key\npayload".
-- KEYS: unacked hash, unacked index, the parked list. ARGV: the delivery tag.
-- Returns 1 if parked, 0 if the message was not (or no longer) unacked.
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
local message = cjson.decode(entry)
local tail = ',' .. cjson.encode(message[2]) .. ',' .. cjson.encode(message[3]) .. ']'
local payload
if string.sub(entry, -#tail) == tail then
  payload = string.sub(entry, 2, #entry - #tail)
else  -- recorded by kombu itself, not by fetch.lua: its text is not inline the same way
  payload = cjson.encode(message[1])
end
redis.call('LPUSH', KEYS[3], message[3] .. '\n' .. payload)
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
