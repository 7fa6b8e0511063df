-- Removes final-state workitems whose retention has run out and that no AE holds a
-- deletion lock on; remembers their UIDs (410 Gone) for a while.
-- A lock is an explicit 'L' in subs:{uid}, or a global subscription with lock (gsub value
-- 'L:-' active, 'L:<seq>' suspended at seq) covering the workitem's creation sequence
-- without an explicit record of that AE overriding it.
-- KEYS[1] final-state zset  KEYS[2] purged-UID zset  KEYS[3] start-time zset  KEYS[4] gsub
-- ARGV[1] cutoff (final before this)  ARGV[2] now  ARGV[3] key prefix  ARGV[4] batch size
-- ARGV[5] forget purged UIDs older than this
-- A locked workitem is re-queued at ARGV[2] (now): it cannot block the batch, and its
-- retention restarts once the last lock is released.
-- Returns the purged UIDs.
local prefix = ARGV[3]
local gsub = redis.call('HGETALL', KEYS[4])
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[4]))
local purged = {}
for _, uid in ipairs(due) do
  local h = prefix .. 'wi:' .. uid
  local sk = prefix .. 'subs:' .. uid
  local seq = tonumber(redis.call('HGET', h, 'seq') or '0')
  local subs = redis.call('HGETALL', sk)
  local explicit = {}
  local locked = false
  for i = 1, #subs, 2 do
    explicit[subs[i]] = subs[i + 1]
    if subs[i + 1] == 'L' then locked = true end
  end
  if not locked then
    for i = 1, #gsub, 2 do
      local aet, val = gsub[i], gsub[i + 1]
      if string.sub(val, 1, 1) == 'L' and explicit[aet] == nil then
        local upto = string.sub(val, 3)
        if upto == '-' or seq <= tonumber(upto) then locked = true; break end
      end
    end
  end
  if locked then
    redis.call('ZADD', KEYS[1], ARGV[2], uid)
  else
    local ix = redis.call('HGET', h, 'ix')
    if ix then
      for _, k in ipairs(cjson.decode(ix)) do redis.call('ZREM', k, uid) end
    end
    for aet, _ in pairs(explicit) do redis.call('SREM', prefix .. 'aesubs:' .. aet, uid) end
    redis.call('DEL', h, sk)
    redis.call('ZREM', KEYS[1], uid)
    redis.call('ZREM', KEYS[3], uid)
    redis.call('ZADD', KEYS[2], ARGV[2], uid)
    purged[#purged + 1] = uid
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
return purged
