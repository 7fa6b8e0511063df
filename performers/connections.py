"""Connections to the queue's Redis, by URL: ``redis://…`` for a real server, or
``memory://NAME`` for an in-process store (fakeredis) that every connection of the same
NAME in this process shares.

The in-process form exists for ``aiw demo`` on a machine with no redis-server: agent and
worker then run as threads of one process. rq needs nothing more than a Redis client, so
the same code paths run in both cases.
"""

from __future__ import annotations

import threading

import redis
import redis.asyncio

MEMORY = "memory://"
_servers: dict[str, object] = {}
_lock = threading.Lock()


def is_memory(url: str) -> bool:
    return url.startswith(MEMORY)


def _fake_server(url: str) -> object:
    import fakeredis

    name = url[len(MEMORY):] or "default"
    with _lock:
        if name not in _servers:
            _servers[name] = fakeredis.FakeServer(version=(7,))
        return _servers[name]


def sync_redis(url: str) -> redis.Redis:
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeRedis(server=_fake_server(url))
    return redis.Redis.from_url(url)


def async_redis(url: str) -> redis.asyncio.Redis:
    if is_memory(url):
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=_fake_server(url))
    return redis.asyncio.Redis.from_url(url)
