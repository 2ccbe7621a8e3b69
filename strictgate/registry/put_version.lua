-- Store the next version of a dataset definition, atomically.
-- KEYS[1] registry:datasets:{p:<project>}   hash dataset id -> latest version
-- KEYS[2] registry:dataset:{p:<project>}:<dataset>   hash version -> document, plus "seq"
-- ARGV[1] dataset id, ARGV[2] the latest version the caller read (0: none),
-- ARGV[3] the document of the new version.
-- Returns the new version, or 0 when another writer moved the latest version first (the
-- caller re-reads and decides again), so two writers can never both claim one version.
-- "seq" survives a delete, so a re-created dataset continues the numbering and an output
-- record's version never names two different definitions.
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then
  return 0
end
local version = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') + 1
redis.call('HSET', KEYS[2], tostring(version), ARGV[3], 'seq', tostring(version))
redis.call('HSET', KEYS[1], ARGV[1], tostring(version))
return version
