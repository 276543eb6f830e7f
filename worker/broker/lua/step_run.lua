-- One step run's figures in one call (worker/store/step_stats.py).
-- KEYS[1] the metrics hash, KEYS[2] last reported values, KEYS[3] the job record,
-- KEYS[4] the set of histories. ARGV[1] JSON: {"add": {field: integer}, "addf": {field: float},
-- "values": {field: float}, "record": {field: float}, "history": {series: float},
-- "prefix": history key prefix, "keep": runs kept per history}.
local run = cjson.decode(ARGV[1])
for field, n in pairs(run.add) do redis.call('HINCRBY', KEYS[1], field, n) end
for field, x in pairs(run.addf) do redis.call('HINCRBYFLOAT', KEYS[1], field, x) end
for field, x in pairs(run.values) do redis.call('HSET', KEYS[2], field, x) end
for field, x in pairs(run.record) do redis.call('HSET', KEYS[3], field, x) end
for series, x in pairs(run.history) do
  local key = run.prefix .. series
  redis.call('LPUSH', key, x)
  redis.call('LTRIM', key, 0, run.keep - 1)
  redis.call('SADD', KEYS[4], series)
end
return 1
