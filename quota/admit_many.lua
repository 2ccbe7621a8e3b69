-- Admission of one request carrying records for several datasets of one user: idempotency +
-- quota + enqueue of one entry per dataset, all or nothing, atomically, in one round trip.
-- admit.lua is the one-entry case (the hot path), kept apart so that it stays as lean.
--
-- Every key carries the user's hash tag {<user_id>}, so the script touches one slot and runs
-- unchanged on a Redis Cluster.
--
-- N = ARGV[1] entries.
-- KEYS[1] quota_limit:datasets:{u}            limit; missing -> ARGV[2]; -1 = unlimited
-- KEYS[2] usage_total:datasets:{u}:<YYYY-MM>  records admitted this month
-- KEYS[3] usage_delta:datasets:{u}:<YYYY-MM>  admitted, not yet flushed to the ledger
-- KEYS[2+2i]   queue:datasets:{u}:<p>:<d_i>          entry i's stream (i = 1..N)
-- KEYS[3+2i]   queued:queue:datasets:{u}:<p>:<d_i>   its records queued, not yet written
-- KEYS[4+2N]   idem:datasets:{u}:<p>:<digest>        optional: stored outcome
--
-- ARGV[1] N: entries (>= 1), one per dataset, every queue distinct
-- ARGV[2] default limit for users without a limit key
-- ARGV[3] unix time at which the usage keys expire (absolute, never a rolling TTL)
-- ARGV[4] seconds to keep the idempotency record
-- ARGV[5] digest of the request (an idempotency key reused for another request conflicts)
-- ARGV[6] unix time at which the month of the usage keys starts (inclusive)
-- ARGV[7] unix time at which it ends (exclusive)
-- ARGV[8] bound of each queued counter: past it the request is refused
-- ARGV[9] total records of the request (the sum of the entries' counts)
-- ARGV[9+i] records of entry i (>= 1)
-- then, for each entry in order: the number of its stream arguments, then its field, value
-- pairs
--
-- Replies (first element is the outcome), as admit.lua's:
--   {1, limit, used_after, entry_id_1, ..., entry_id_N}  admitted
--   {2, limit, used, now_s, now_us}                      quota exceeded, nothing changed
--   {3, limit, used, stored_count, stored_entry_ids}     duplicate, nothing changed
--                                                        (ids joined by ',')
--   {4}                                                  idempotency conflict, nothing changed
--   {5, now_s}                                           the keys are not of this server's
--                                                        month: nothing read or changed
--   {6, queued, i}                                       entry i's queue is full: nothing
--                                                        changed in any queue

local n_entries = tonumber(ARGV[1])
local total = tonumber(ARGV[9])
local idem = KEYS[4 + 2 * n_entries]

-- 0. The month is this server's (see admit.lua).
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

-- 1. A key seen before answers with its first outcome (the request's total and every entry
--    id) and changes nothing.
if idem then
  local stored = redis.call('GET', idem)
  if stored then
    local digest, count, entry_ids = string.match(stored, '^([^\n]*)\n([^\n]*)\n(.*)$')
    if digest ~= ARGV[5] then
      return {4}
    end
    return {3, current_limit(), current_used(), tonumber(count), entry_ids}
  end
end

-- 2. Quota: once, for the request's total.
local limit = current_limit()
local used = current_used()
if limit >= 0 and used + total > limit then
  return {2, limit, used, now[1], now[2]}
end

-- 3. Backpressure, every queue checked before any is written: one queue over its bound
--    refuses the whole request (the rule of admit.lua per queue: an empty queue takes any
--    entry). A key that is not a stream fails here, before any write, not in XADD midway.
local bound = tonumber(ARGV[8])
for i = 1, n_entries do
  local kind = redis.call('TYPE', KEYS[2 + 2 * i])['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE queue key holds a ' .. kind)
  end
  local queued = tonumber(redis.call('GET', KEYS[3 + 2 * i]) or '0')
  if queued > 0 and queued + tonumber(ARGV[9 + i]) > bound then
    return {6, queued, i}
  end
end

-- 4. Queue every entry, then count. A script runs atomically but its writes are not rolled
--    back on an error, so every check that can fail ran above and the XADDs go first. What
--    could still fail is the server refusing writes for lack of memory, which valkey does
--    only before a script's first write, never midway: the entries are queued together or
--    not at all, and counted if and only if they are queued.
local reply = {1, 0, 0}
local at = 10 + n_entries
for i = 1, n_entries do
  local argc = tonumber(ARGV[at])
  reply[3 + i] = redis.call('XADD', KEYS[2 + 2 * i], '*', unpack(ARGV, at + 1, at + argc))
  at = at + 1 + argc
end
for i = 1, n_entries do
  redis.call('INCRBY', KEYS[3 + 2 * i], ARGV[9 + i])
end
local used_after = redis.call('INCRBY', KEYS[2], total)
redis.call('INCRBY', KEYS[3], total)
redis.call('EXPIREAT', KEYS[2], ARGV[3])
redis.call('EXPIREAT', KEYS[3], ARGV[3])

if idem then
  redis.call('SET', idem, ARGV[5] .. '\n' .. total .. '\n' .. table.concat(reply, ',', 4),
             'EX', ARGV[4])
end

reply[2] = limit
reply[3] = used_after
return reply
