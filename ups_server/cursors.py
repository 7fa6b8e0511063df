"""Per-AE delivery cursors: the last event-stream ID known delivered to (or irrelevant to)
each subscriber AE, kept in Redis so any replica can replay what an AE missed."""

from __future__ import annotations

from redis.asyncio import Redis

_ADVANCE = """
local cur = redis.call('GET', KEYS[1])
local function parse(id)
  local ms, s = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(s)
end
if cur then
  local a, b = parse(cur)
  local c, d = parse(ARGV[1])
  if c < a or (c == a and d <= b) then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


def parse_id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Cursors:
    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int, events_key: str):
        self.redis = redis
        self.prefix = prefix
        self.ttl = max(int(ttl_seconds), 60)
        self.events_key = events_key
        self._advance = redis.register_script(_ADVANCE)

    def key(self, aet: str) -> str:
        return f"{self.prefix}cursor:{aet}"

    async def get(self, aet: str) -> str | None:
        v = await self.redis.get(self.key(aet))
        return v.decode() if v else None

    async def last_event_id(self) -> str:
        last = await self.redis.xrevrange(self.events_key, count=1)
        return last[0][0].decode() if last else "0-0"

    async def start_if_unset(self, aet: str) -> None:
        """An AE seen for the first time starts at the stream's end (nothing older is its)."""
        await self.redis.set(self.key(aet), await self.last_event_id(), nx=True, ex=self.ttl)

    async def advance(self, aet: str, stream_id: str) -> None:
        await self._advance(keys=[self.key(aet)], args=[stream_id, self.ttl])
