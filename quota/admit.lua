-- Admission of one request: idempotency + quota + enqueue, atomically, in one round trip.
--
-- Every key carries the user's hash tag {<user_id>}, so the script touches one slot and runs
-- unchanged on a Redis Cluster.
--
-- KEYS[1] quota_limit:datasets:{u}            limit; missing -> ARGV[2]; -1 = unlimited
-- KEYS[2] usage_total:datasets:{u}:<YYYY-MM>  records admitted this month
-- KEYS[3] usage_delta:datasets:{u}:<YYYY-MM>  admitted, not yet flushed to the ledger
-- KEYS[4] queue:datasets:{u}:<p>:<d>          the dataset's stream (never trimmed here)
-- KEYS[5] queued:queue:datasets:{u}:<p>:<d>   records queued, not yet written (backpressure)
-- KEYS[6] idem:datasets:{u}:<p>:<digest>      optional: stored outcome of an earlier admission
--
-- ARGV[1] n: records in the request (>= 0: 0 for an entry of quarantined records only)
-- ARGV[2] default limit for users without a limit key
-- ARGV[3] unix time at which the usage keys expire (absolute, never a rolling TTL)
-- ARGV[4] seconds to keep the idempotency record
-- ARGV[5] digest of the request (an idempotency key reused for another request conflicts)
-- ARGV[6] unix time at which the month of the usage keys starts (inclusive)
-- ARGV[7] unix time at which it ends (exclusive)
-- ARGV[8] bound of KEYS[5]: at or past it the request is refused (STRICTGATE_MAX_QUEUE_RECORDS)
-- ARGV[9..] field, value pairs of the stream entry
--
-- Replies (first element is the outcome):
--   {1, limit, used_after, entry_id}                admitted
--   {2, limit, used, now_s, now_us}                 quota exceeded, nothing changed
--   {3, limit, used, stored_count, stored_entry_id} duplicate, nothing changed
--   {4}                                             idempotency conflict, nothing changed
--   {5, now_s}                                      the keys are not of this server's month:
--                                                   nothing read or changed; the caller
--                                                   retries with the month of now_s
--   {6, queued}                                     the dataset queue's backlog is full,
--                                                   nothing changed

local n = tonumber(ARGV[1])

-- 0. The month is this server's, not the caller's: API instances with skewed clocks must
--    count the same moment into the same keys. The caller guesses the month (its keys carry
--    it and a cluster script must be given every key it touches); a wrong guess changes
--    nothing and is answered with the time to guess from. Scripts are replicated by their
--    effects, so reading TIME before writing is allowed.
local now = redis.call('TIME')
local now_s = tonumber(now[1])
if now_s < tonumber(ARGV[6]) or now_s >= tonumber(ARGV[7]) then
  return {5, now[1]}
end

local function current_limit()
  local raw = redis.call('GET', KEYS[1])
  if raw then
    return tonumber(raw)
  end
  return tonumber(ARGV[2])
end

local function current_used()
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end

-- 1. A key seen before answers with its first outcome and changes nothing, so a client
--    retrying after a lost reply (or a 503) is never counted twice.
if KEYS[6] then
  local stored = redis.call('GET', KEYS[6])
  if stored then
    local digest, count, entry_id = string.match(stored, '^([^\n]*)\n([^\n]*)\n(.*)$')
    if digest ~= ARGV[5] then
      return {4}
    end
    return {3, current_limit(), current_used(), tonumber(count), entry_id}
  end
end

-- 2. Quota: all or nothing for the whole batch.
local limit = current_limit()
local used = current_used()
if limit >= 0 and used + n > limit then
  return {2, limit, used, now[1], now[2]}
end

-- 3. Backpressure: records queued and not yet written, per dataset queue (the worker
--    decrements the counter in the transaction that acknowledges and deletes entries).
--    A batch that would pass the bound is refused, unless the queue is empty: a batch
--    bigger than the bound alone is then taken rather than refused forever.
local queued = tonumber(redis.call('GET', KEYS[5]) or '0')
if queued > 0 and queued + n > tonumber(ARGV[8]) then
  return {6, queued}
end

-- 4. Count and queue together: quota is counted if and only if the records are queued.
--    A script runs atomically but its writes are not rolled back on an error, so every check
--    that can fail ran above (tonumber of the counters) and XADD, the one write whose
--    arguments come from the caller, goes first: if it fails, nothing was counted.
local entry_id = redis.call('XADD', KEYS[4], '*', unpack(ARGV, 9))
local used_after = redis.call('INCRBY', KEYS[2], n)
redis.call('INCRBY', KEYS[5], n)
redis.call('INCRBY', KEYS[3], n)
-- Set on every admission rather than only on creation: the flush renames the delta away, and
-- an absolute EXPIREAT is idempotent, so re-setting it costs nothing and can never drift.
redis.call('EXPIREAT', KEYS[2], ARGV[3])
redis.call('EXPIREAT', KEYS[3], ARGV[3])

if KEYS[6] then
  redis.call('SET', KEYS[6], ARGV[5] .. '\n' .. n .. '\n' .. entry_id, 'EX', ARGV[4])
end

return {1, limit, used_after, entry_id}
