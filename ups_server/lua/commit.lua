-- One atomic change of one workitem: check, write, index, and append its events.
-- "No change without its event, no event without its change" (docs/architecture.md).
--
-- KEYS[1] workitem hash       KEYS[2] creation sequence counter   KEYS[3] event stream
-- KEYS[4] purged-UID zset     KEYS[5] final-state zset            KEYS[6] start-time zset
-- KEYS[7 .. 6+nadd]           index zsets the workitem joins
-- KEYS[7+nadd .. 6+nadd+nrem] index zsets the workitem leaves
-- ARGV[1] uid   ARGV[2] expected version ('' = create: must not exist nor have existed)
-- ARGV[3] doc   ARGV[4] proj (the default search projection of doc)   ARGV[5] state
-- ARGV[6] transaction uid   ARGV[7] nadd   ARGV[8] nrem
-- ARGV[9] start-time score ('' = none)   ARGV[10] final-state time ('' = not final)
-- ARGV[11] stream MAXLEN (approximate)  ARGV[12] JSON list of the index keys now held
-- ARGV[13] number of events, then (type, body) pairs
-- then: key prefix, the subscription version the caller's filtered-subscription records
-- came from ('*' = not relevant), number of subscription records, then (aet, code) pairs:
-- the filtered subscribers a new workitem matches (subs:{uid}, aesubs:{aet}, written here),
-- then the commit time (epoch seconds): an IN PROGRESS workitem's last activity, which the
-- stale-claim lease watches (zset {prefix}active)
-- Returns {version, seq, event ids...} or {-1} exists, {-2} missing, {-3} version changed,
-- {-4} subscriptions changed since the caller read them (read them again).
local h = KEYS[1]
local uid = ARGV[1]
local n = tonumber(ARGV[13])
local at = 14 + 2 * n
local prefix = ARGV[at]
if ARGV[at + 1] ~= '*' and (redis.call('GET', prefix .. 'subver') or '') ~= ARGV[at + 1] then
  return {-4}
end
local ver, seq
if ARGV[2] == '' then
  if redis.call('EXISTS', h) == 1 or redis.call('ZSCORE', KEYS[4], uid) then
    return {-1}
  end
  seq = redis.call('INCR', KEYS[2])
  ver = 1
  redis.call('HSET', h, 'seq', seq)
else
  local cur = redis.call('HMGET', h, 'ver', 'seq')
  if not cur[1] then return {-2} end
  if cur[1] ~= ARGV[2] then return {-3} end
  ver = tonumber(cur[1]) + 1
  seq = tonumber(cur[2])
end
redis.call('HSET', h, 'doc', ARGV[3], 'proj', ARGV[4], 'state', ARGV[5], 'tuid', ARGV[6], 'ver', ver, 'ix', ARGV[12])
local nadd = tonumber(ARGV[7])
local nrem = tonumber(ARGV[8])
for i = 1, nadd do redis.call('ZADD', KEYS[6 + i], seq, uid) end
for i = 1, nrem do redis.call('ZREM', KEYS[6 + nadd + i], uid) end
if ARGV[9] == '' then
  redis.call('ZREM', KEYS[6], uid)
else
  redis.call('ZADD', KEYS[6], ARGV[9], uid)
end
if ARGV[10] ~= '' then redis.call('ZADD', KEYS[5], ARGV[10], uid) end
local nsubs = tonumber(ARGV[at + 2])
for i = 0, nsubs - 1 do
  local aet, code = ARGV[at + 3 + 2 * i], ARGV[at + 4 + 2 * i]
  redis.call('HSET', prefix .. 'subs:' .. uid, aet, code)
  redis.call('SADD', prefix .. 'aesubs:' .. aet, uid)
end
if ARGV[5] == 'IN PROGRESS' then
  redis.call('ZADD', prefix .. 'active', ARGV[at + 3 + 2 * nsubs], uid)
else
  redis.call('ZREM', prefix .. 'active', uid)
end
local out = {ver, seq}
for i = 0, n - 1 do
  out[#out + 1] = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[11], '*',
    'uid', uid, 'seq', seq, 'type', ARGV[14 + 2 * i], 'body', ARGV[15 + 2 * i])
end
return out
