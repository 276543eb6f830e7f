-- Publish many messages to one pub/sub channel in one command (a bulk submission's task-sent
-- events, Client.submit_many): one reply instead of one per message, in order.
-- KEYS[1]: the channel. ARGV: the messages.
for _, message in ipairs(ARGV) do
  redis.call('PUBLISH', KEYS[1], message)
end
return #ARGV
