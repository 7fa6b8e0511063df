-- One field of many workitem hashes in one round trip.
-- ARGV[1] key prefix  ARGV[2] field  ARGV[3..] workitem UIDs.  Returns the values (false if absent).
local out = {}
for i = 3, #ARGV do
  out[#out + 1] = redis.call('HGET', ARGV[1] .. 'wi:' .. ARGV[i], ARGV[2]) or false
end
return out
