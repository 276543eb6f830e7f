-- Push one value many times onto a list in one command (a bulk submission's wake tokens,
-- Client.submit_many: one per message, so the count stays equal to the queue's): the client
-- sends the count, not every copy.
-- KEYS[1]: the list. ARGV: the command (LPUSH or RPUSH), the value, how many copies.
local copies, step = tonumber(ARGV[3]), 1000
local batch = {}
for i = 1, math.min(copies, step) do batch[i] = ARGV[2] end
local left = copies
while left >= step do
  redis.call(ARGV[1], KEYS[1], unpack(batch))
  left = left - step
end
if left > 0 then redis.call(ARGV[1], KEYS[1], unpack(batch, 1, left)) end
return copies
