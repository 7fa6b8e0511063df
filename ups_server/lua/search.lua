-- Ordered candidates of a search: the intersection of index zsets (scored by creation
-- sequence, so pages are stable), optionally restricted to a start-time range.
-- KEYS[1] scratch key   KEYS[2] scratch key for the range   KEYS[3] start-time zset
-- KEYS[4] the all-workitems zset   KEYS[5..] index zsets
-- ARGV[1] range low ('' = none) ARGV[2] range high (exclusive, '' = open)
-- ARGV[3] offset  ARGV[4] count (-1 = all)
-- Returns {total, uid...}
local nidx = #KEYS - 4
local low, high = ARGV[1], ARGV[2]
local ranged = low ~= '' or high ~= ''
local offset = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local stop = -1
if count >= 0 then stop = offset + count - 1 end
if nidx == 0 and not ranged then
  local total = redis.call('ZCARD', KEYS[4])
  if count == 0 then return {total} end
  local ids = redis.call('ZRANGE', KEYS[4], offset, stop)
  table.insert(ids, 1, total)
  return ids
end
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
local total = redis.call('ZCARD', KEYS[1])
local ids = {}
if count ~= 0 then ids = redis.call('ZRANGE', KEYS[1], offset, stop) end
redis.call('DEL', KEYS[1], KEYS[2])
table.insert(ids, 1, total)
return ids
