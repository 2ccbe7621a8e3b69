-- Admission of one request carrying records for several datasets of one user: idempotency +
-- client event ids + quota + enqueue of one entry per dataset, all or nothing, atomically, in
-- one round trip. admit.lua is the one-entry case without event ids (the hot path), kept apart
-- so that it stays as lean.
--
-- Every key carries the user's hash tag {<user_id>}, so the script touches one slot and runs
-- unchanged on a Redis Cluster.
--
-- N = ARGV[1] entries, E = ARGV[10] event keys.
-- KEYS[1] quota_limit:datasets:{u}            limit; missing -> ARGV[2]; -1 = unlimited
-- KEYS[2] usage_total:datasets:{u}:<YYYY-MM>  records admitted this month
-- KEYS[3] usage_delta:datasets:{u}:<YYYY-MM>  admitted, not yet flushed to the ledger
-- KEYS[2+2i]   queue:datasets:{u}:<p>:<d_i>          entry i's stream (i = 1..N)
-- KEYS[3+2i]   queued:queue:datasets:{u}:<p>:<d_i>   its records queued, not yet written
-- KEYS[3+2N+j] evid:{u}:<p>:<digest>                 event id j of the request (j = 1..E)
-- KEYS[4+2N+E] idem:datasets:{u}:<p>:<digest>        optional: stored outcome
--
-- ARGV[1] N: entries (>= 0), one per dataset, every queue distinct. 0 when every event of
--         the request was accepted before: the script then only answers the quota state,
--         remembers the event keys given (if any) and stores the idempotency record
-- ARGV[2] default limit for users without a limit key
-- ARGV[3] unix time at which the usage keys expire (absolute, never a rolling TTL)
-- ARGV[4] seconds to keep the idempotency record
-- ARGV[5] digest of the request (an idempotency key reused for another request conflicts)
-- ARGV[6] unix time at which the month of the usage keys starts (inclusive)
-- ARGV[7] unix time at which it ends (exclusive)
-- ARGV[8] bound of each queued counter: past it the request is refused
-- ARGV[9] total records of the request (the sum of the entries' counts)
-- ARGV[10] E: event keys (>= 0), every one distinct
-- ARGV[11] seconds an event id is remembered (integer >= 1)
-- ARGV[11+i] records of entry i (>= 0: 0 for an entry of quarantined records only)
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
--   {7, j_1, ..., j_k}                                   event keys j_1 < ... < j_k (1-based)
--                                                        exist: nothing changed

local n_entries = tonumber(ARGV[1])
local total = tonumber(ARGV[9])
local n_events = tonumber(ARGV[10])
local first_event = 4 + 2 * n_entries
local idem = KEYS[first_event + n_events]

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
--    id) and changes nothing. It comes before the event ids: the first admission remembered
--    them, and a replay must get its first outcome back, not the events called seen.
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

-- 2. Client event ids: one already remembered refuses the request and changes nothing, and
--    the caller sends it again without those events. One EXISTS for all (the common case:
--    none seen), then one per key only to name those that are.
if n_events > 0 then
  local last_event = first_event + n_events - 1
  if redis.call('EXISTS', unpack(KEYS, first_event, last_event)) > 0 then
    local seen = {7}
    for j = 1, n_events do
      if redis.call('EXISTS', KEYS[first_event + j - 1]) == 1 then
        seen[#seen + 1] = j
      end
    end
    return seen
  end
end

-- 3. Quota: once, for the request's total. A request with nothing left to count (every event
--    accepted before) is never refused, even when the limit was lowered below the usage.
local limit = current_limit()
local used = current_used()
if total > 0 and limit >= 0 and used + total > limit then
  return {2, limit, used, now[1], now[2]}
end

-- 4. Backpressure, every queue checked before any is written: one queue over its bound
--    refuses the whole request (the rule of admit.lua per queue: an empty queue takes any
--    entry). A key that is not a stream fails here, before any write, not in XADD midway.
local bound = tonumber(ARGV[8])
for i = 1, n_entries do
  local kind = redis.call('TYPE', KEYS[2 + 2 * i])['ok']
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE queue key holds a ' .. kind)
  end
  local queued = tonumber(redis.call('GET', KEYS[3 + 2 * i]) or '0')
  if queued > 0 and queued + tonumber(ARGV[11 + i]) > bound then
    return {6, queued, i}
  end
end

-- 5. Queue every entry, then count, then remember. A script runs atomically but its writes
--    are not rolled back on an error, so every check that can fail ran above and the XADDs
--    go first. What could still fail is the server refusing writes for lack of memory,
--    which valkey does only before a script's first write, never midway: the entries are
--    queued together or not at all, and counted if and only if they are queued. The event
--    keys are written after them by SET, which fails on no key type and no value (the
--    window is an integer >= 1, checked by the caller): ids are remembered if and only if
--    their events were taken. With no entry nothing is queued or counted (no usage key is
--    created either).
local reply = {1, limit, used}
if n_entries > 0 then
  local at = 12 + n_entries
  for i = 1, n_entries do
    local argc = tonumber(ARGV[at])
    reply[3 + i] = redis.call('XADD', KEYS[2 + 2 * i], '*', unpack(ARGV, at + 1, at + argc))
    at = at + 1 + argc
  end
  for i = 1, n_entries do
    redis.call('INCRBY', KEYS[3 + 2 * i], ARGV[11 + i])
  end
  reply[3] = redis.call('INCRBY', KEYS[2], total)
  redis.call('INCRBY', KEYS[3], total)
  redis.call('EXPIREAT', KEYS[2], ARGV[3])
  redis.call('EXPIREAT', KEYS[3], ARGV[3])
end

local window = ARGV[11]
for j = first_event, first_event + n_events - 1 do
  redis.call('SET', KEYS[j], '1', 'EX', window)
end

if idem then
  redis.call('SET', idem, ARGV[5] .. '\n' .. total .. '\n' .. table.concat(reply, ',', 4),
             'EX', ARGV[4])
end

return reply
