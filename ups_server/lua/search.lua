-- One search in one round trip: ordered candidates (creation order, so pages are stable)
-- from the intersection of index zsets, optionally within a start-time range, and the
-- requested hash field of each workitem on the page.
-- KEYS[1] scratch key   KEYS[2] scratch key for the range   KEYS[3] start-time zset
-- KEYS[4] the all-workitems zset   KEYS[5..] index zsets
-- ARGV[1] range low ('' = none) ARGV[2] range high (exclusive, '' = open)
-- ARGV[3] offset  ARGV[4] count (-1 = all)  ARGV[5] hash field to return ('' = none)
-- ARGV[6] workitem key prefix  ARGV[7] '1' = values only: the page's field values, no UIDs
-- Returns {total, uid, [field value], uid, [field value], ...}; values only, {total, n, v1, ..., vn},
-- or when some workitem on the page lacks the field the plain form after {total, -1, ...}:
-- the caller makes the missing values itself.
local nidx = #KEYS - 4
local low, high = ARGV[1], ARGV[2]
local ranged = low ~= '' or high ~= ''
local offset = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local field = ARGV[5]
local stop = -1
if count >= 0 then stop = offset + count - 1 end
local total, ids
if not ranged and nidx <= 1 then
  -- one index (or none) answers: no intersection to build
  local key = KEYS[4]
  if nidx == 1 then key = KEYS[5] end
  total = redis.call('ZCARD', key)
  ids = {}
  if count ~= 0 then ids = redis.call('ZRANGE', key, offset, stop) end
else
  local keys = {KEYS[4]}
  local weights = {1}
  for i = 1, nidx do keys[#keys + 1] = KEYS[4 + i]; weights[#weights + 1] = 0 end
  if ranged then
    if low == '' then low = '-inf' end
    if high == '' then high = '+inf' else high = '(' .. high end
    redis.call('ZRANGESTORE', KEYS[2], KEYS[3], low, high, 'BYSCORE')
    keys[#keys + 1] = KEYS[2]; weights[#weights + 1] = 0
  end
  local args = {'ZINTERSTORE', KEYS[1], #keys}
  for _, k in ipairs(keys) do args[#args + 1] = k end
  args[#args + 1] = 'WEIGHTS'
  for _, w in ipairs(weights) do args[#args + 1] = w end
  redis.call(unpack(args))
  total = redis.call('ZCARD', KEYS[1])
  ids = {}
  if count ~= 0 then ids = redis.call('ZRANGE', KEYS[1], offset, stop) end
  redis.call('DEL', KEYS[1], KEYS[2])
end
if ARGV[7] == '1' and field ~= '' then
  -- the values alone, in page order: the caller joins them into the reply body as they are
  -- (joining here, with Lua's string buffer, tripled Redis's CPU per search)
  local vals = {total, #ids}
  local whole = true
  for i, id in ipairs(ids) do
    local v = redis.call('HGET', ARGV[6] .. 'wi:' .. id, field)
    if not v then whole = false; break end
    vals[i + 2] = v
  end
  if whole then return vals end
end
local out = {total}
if ARGV[7] == '1' and field ~= '' then out[2] = -1 end
for _, id in ipairs(ids) do
  out[#out + 1] = id
  if field ~= '' then
    out[#out + 1] = redis.call('HGET', ARGV[6] .. 'wi:' .. id, field) or false
  end
end
return out
