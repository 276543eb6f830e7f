-- A helper that start.lua and finish.lua are loaded after (worker/store/jobs.py): observe
-- `value` in histogram `name` of hash `key`; ARGV[first..first+n-1] are the bucket bounds as
-- strings (the field names).
local function observe(key, name, value, first, n)
  local slot = '+Inf'
  for i = first, first + n - 1 do
    if value <= tonumber(ARGV[i]) then slot = ARGV[i] break end
  end
  redis.call('HINCRBY', key, name .. '|' .. slot, 1)
  redis.call('HINCRBYFLOAT', key, name .. '|sum', value)
  redis.call('HINCRBY', key, name .. '|count', 1)
end
