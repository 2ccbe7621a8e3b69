-- Delete a dataset: its index entry, every version and its settings, keeping only the "seq"
-- counter (a re-created dataset continues the numbering but starts with default settings).
-- KEYS[1] registry:datasets:{p:<project>}, KEYS[2] registry:dataset:{p:<project>}:<dataset>,
-- KEYS[3] registry:dataset_settings:{p:<project>}:<dataset>
-- ARGV[1] dataset id. Returns 1 if the dataset existed, else 0.
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
local seq = redis.call('HGET', KEYS[2], 'seq')
redis.call('DEL', KEYS[2])
if seq then
  redis.call('HSET', KEYS[2], 'seq', seq)
end
if existed == 1 then
  redis.call('DEL', KEYS[3])
end
return existed
