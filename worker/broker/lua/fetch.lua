-- The reliable fetch (worker/broker/transport.py): take the first message found and record it
-- unacked as kombu would ([payload, exchange, routing key] under its delivery tag, scored by now),
-- in one step, so a message is always in its queue or recorded unacked.
-- Runs after set_aside_fn.lua and move_aside_fn.lua.
-- KEYS: unacked hash, unacked index, set-aside index, set-aside id counter, then n queue keys
-- highest priority first, then their n wake lists, then the set of paused queues. ARGV: now, the
-- 1-based index of the queue whose wake token the caller took (0: none), the token, the
-- set-aside entry prefix, the prefix of keys moved aside, the job record key prefix ('' when job
-- records live on another Redis) and the job header's name.
-- The token count stays equal to the message count per queue: taking from another queue than the
-- token's returns that token and spends one of the queue actually taken from. A message that is
-- not a kombu envelope is set aside (a script error would not undo its pop).
-- A paused queue is skipped (its messages stay queued and counted); a token taken from it goes
-- back when nothing else was taken.
-- A queue or wake list of another type than list (written by another client) is moved aside and
-- skipped: redis.pcall, since an error would stop the worker. So are, before anything is taken
-- (a script's error does not undo its writes: a message popped and then not recorded would be
-- lost), the unacked hash and index and the paused set of the wrong type, and a job record
-- that is not a hash (its step is then refused as one of no such job).
-- A message whose job header names a job id (32 hex digits) is looked up in the same step: the
-- worker checks its job exists, matches and has not finished without another round trip.
-- Returns {index, payload, unreadable count, indices of the paused queues, {key, new name, ...}
-- of the keys moved aside, {job id, pipeline, final state} ('' for a missing field; empty when not
-- looked up), 1 if a message is left in any of the queues else 0}, index 0 when nothing was
-- found. With none left, the worker waits on the wake lists next instead of fetching again at
-- once: a fetch sure to find nothing (a chain's next step is not sent yet) is a round trip lost.
local n = (#KEYS - 5) / 2
local woke = tonumber(ARGV[2])
local unreadable = 0
local paused = {}
local moved = {}
-- After a command failed with `reply` (the only table these commands return), move `key` aside
-- if it is not of `kind` (a list unless named); any other error still fails the script.
local function aside(key, reply, kind)
  if not move_aside(KEYS[4], ARGV[5], key, kind or 'list', moved) then error(reply['err']) end
end
for _, key_kind in ipairs({{KEYS[1], 'hash'}, {KEYS[2], 'zset'}, {KEYS[#KEYS], 'set'}}) do
  move_aside(KEYS[4], ARGV[5], key_kind[1], key_kind[2], moved)
end
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[#KEYS], KEYS[4 + i]) == 1 then
    paused[#paused + 1] = i
  else
    while true do
      local payload = redis.pcall('RPOP', KEYS[4 + i])
      if type(payload) == 'table' then aside(KEYS[4 + i], payload) break end
      if not payload then break end
      local ok, message = pcall(cjson.decode, payload)
      local props = ok and type(message) == 'table' and message['properties']
      local info = type(props) == 'table' and props['delivery_info']
      if type(info) == 'table' and type(props['delivery_tag']) == 'string' then
        local tag = props['delivery_tag']
        local entry = '[' .. payload .. ',' .. cjson.encode(info['exchange'] or '') .. ','
          .. cjson.encode(info['routing_key'] or '') .. ']'
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag, entry)
        if woke ~= i then
          local reply = woke > 0 and redis.pcall('RPUSH', KEYS[4 + n + woke], ARGV[3])
          if type(reply) == 'table' then aside(KEYS[4 + n + woke], reply) end
          reply = redis.pcall('LPOP', KEYS[4 + n + i])
          if type(reply) == 'table' then aside(KEYS[4 + n + i], reply) end
        end
        local job = {}
        local id = ARGV[6] ~= '' and type(message['headers']) == 'table' and message['headers'][ARGV[7]]
        if type(id) == 'string' and #id == 32 and not id:find('[^0-9a-f]') then
          local found = redis.pcall('HMGET', ARGV[6] .. id, 'pipeline', 'state')
          if found['err'] then
            aside(ARGV[6] .. id, found, 'hash')
            found = {}
          end
          job = {id, found[1] or '', found[2] or ''}
        end
        local left = 0
        for j = 1, n do
          local length = redis.pcall('LLEN', KEYS[4 + j])
          if type(length) == 'number' and length > 0 then left = 1 break end
        end
        return {i, payload, unreadable, paused, moved, job, left}
      end
      set_aside(KEYS[3], KEYS[4], ARGV[4], ARGV[1], 'not a kombu message', KEYS[4 + i], payload)
      unreadable = unreadable + 1
    end
  end
end
if woke > 0 and paused[1] and redis.call('SISMEMBER', KEYS[#KEYS], KEYS[4 + woke]) == 1 then
  local reply = redis.pcall('RPUSH', KEYS[4 + n + woke], ARGV[3])
  if type(reply) == 'table' then aside(KEYS[4 + n + woke], reply) end
end
return {0, '', unreadable, paused, moved, {}, 0}
