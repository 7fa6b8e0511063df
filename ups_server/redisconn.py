"""The Redis client the Task Manager uses: redis.asyncio with its commands packed by hiredis.

redis-py's asyncio connections pack every command in Python, argument by argument, growing
one buffer (``Connection.pack_command``). A commit sends ~30 arguments, two of them several
kilobytes (the workitem and its projection), so packing was a fifth of a claim's CPU.
hiredis (already the reply parser) packs the same RESP bytes in C; redis-py's synchronous
client does exactly this when hiredis is installed (``HiredisRespSerializer``). Everything
else about the connection — timeouts, retries, health checks — is redis-py's own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency; plain redis-py works too
    _hiredis_pack = None


class HiredisPacking:
    """Connection mixin: ``pack_command`` by hiredis for the argument types it encodes
    exactly as redis-py does (bytes, str as UTF-8, int, float by repr); anything else —
    and a command name holding spaces, which redis-py splits — goes to redis-py."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if _hiredis_pack is not None and type(args[0]) is str and " " not in args[0]:
            for a in args:
                t = type(a)
                if t is not bytes and t is not str and t is not int and t is not float:
                    break
            else:
                return [_hiredis_pack(args)]
        return super().pack_command(*args)  # type: ignore[misc]


@cache
def _with_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    return type(f"Hiredis{cls.__name__}", (HiredisPacking, cls), {})


def from_url(url: str) -> Redis:
    """``Redis.from_url(url)``, its connections (TCP, TLS or Unix socket, as the URL says)
    packing commands with hiredis."""
    redis = Redis.from_url(url)
    pool = redis.connection_pool
    pool.connection_class = _with_packing(pool.connection_class)
    return redis
