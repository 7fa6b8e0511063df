-- Removes final-state workitems whose retention has run out and that no AE holds a
-- deletion lock on; remembers their UIDs (410 Gone) for a while.
-- KEYS[1] final-state zset  KEYS[2] purged-UID zset  KEYS[3] start-time zset
-- ARGV[1] cutoff (final before this)  ARGV[2] now  ARGV[3] key prefix  ARGV[4] batch size
-- ARGV[5] forget purged UIDs older than this
-- A locked workitem is re-queued at ARGV[2] (now) so it cannot block the batch.
-- Returns the purged UIDs.
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[4]))
local purged = {}
for _, uid in ipairs(due) do
  local h = ARGV[3] .. 'wi:' .. uid
  if redis.call('EXISTS', ARGV[3] .. 'locks:' .. uid) == 0 then
    local ix = redis.call('HGET', h, 'ix')
    if ix then
      for _, k in ipairs(cjson.decode(ix)) do redis.call('ZREM', k, uid) end
    end
    redis.call('DEL', h)
    redis.call('ZREM', KEYS[1], uid)
    redis.call('ZREM', KEYS[3], uid)
    redis.call('ZADD', KEYS[2], ARGV[2], uid)
    purged[#purged + 1] = uid
  else
    -- locked: look again one retention period from now
    redis.call('ZADD', KEYS[1], ARGV[2], uid)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
return purged
