"""The Redis client the Task Manager uses: redis.asyncio, its commands packed by hiredis and
sent without a task per command.

redis-py's asyncio connections pack every command in Python, argument by argument, growing
one buffer (``Connection.pack_command``). A commit sends ~30 arguments, two of them several
kilobytes (the workitem and its projection), so packing was a fifth of a claim's CPU.
hiredis (already the reply parser) packs the same RESP bytes in C; redis-py's synchronous
client does exactly this when hiredis is installed (``HiredisRespSerializer``). Everything
else about the connection — timeouts, retries, health checks — is redis-py's own.

Sending: with a socket timeout (redis-py's default is 5 s) each send runs inside
``asyncio.wait_for``, which on Python 3.11 creates and schedules a task per command — a
quarter of a GET's CPU. A send only ever waits when the transport's buffer is above its
high-water mark (``StreamWriter.drain``); below it, the bytes are handed to the transport
and there is nothing to time out. So the timeout is kept for that case only.
"""

from __future__ import annotations

import asyncio
import math
from functools import cache
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency; plain redis-py works too
    _hiredis_pack = None


async def _reply(conn: AbstractConnection, timeout: float | None) -> Any:
    """The next reply on ``conn`` (``timeout`` as redis-py's ``read_response`` takes it),
    an error reply returned rather than raised."""
    try:
        return await conn.read_response(timeout=timeout)
    except ResponseError as exc:
        return exc


class HiredisPacking:
    """Connection mixin: ``pack_command`` by hiredis for the argument types it encodes
    exactly as redis-py does (bytes, str as UTF-8, int, float by repr); anything else —
    and a command name holding spaces, which redis-py splits — goes to redis-py. And
    ``send_packed_command`` without ``wait_for`` when the write cannot block."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if _hiredis_pack is not None and type(args[0]) is str and " " not in args[0]:
            for a in args:
                t = type(a)
                if t is not bytes and t is not str and t is not int and t is not float:
                    break
            else:
                return [_hiredis_pack(args)]
        return super().pack_command(*args)  # type: ignore[misc]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer  # type: ignore[attr-defined]
        if (not self.socket_timeout or not self.is_connected  # type: ignore[attr-defined]
                or (check_health and self.health_check_interval) or writer is None  # type: ignore[attr-defined]
                or writer.transport.is_closing()):
            return await super().send_packed_command(command, check_health)  # type: ignore[misc]
        try:
            if isinstance(command, str):
                command = command.encode()
            if isinstance(command, bytes):
                command = [command]
            writer.writelines(command)
            transport = writer.transport
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                await asyncio.wait_for(writer.drain(), self.socket_timeout)  # type: ignore[attr-defined]
        except asyncio.TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise TimeoutError("Timeout writing to socket") from None
        except OSError as e:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            err_no, errmsg = ("UNKNOWN", e.args[0]) if len(e.args) == 1 else (e.args[0], e.args[1])
            raise ConnectionError(f"Error {err_no} while writing to socket. {errmsg}.") from e
        except BaseException:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise


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


class Direct:
    """The hot path's commands (HGET, HMGET, EVALSHA: no reply callback) sent straight on a
    connection this object keeps, instead of through ``Redis.execute_command``.

    Per command, ``execute_command`` takes a connection from the pool (an asyncio lock,
    a pending-data check, four observability counters) and gives it back (the lock again,
    an event dispatch, four more counters), wraps the call in its retry loop and records
    its duration: ~50 µs of CPU on the benchmark machine, more than sending and reading
    the reply. Here a connection taken from the pool once stays with this object and is
    reused while it is healthy; redis-py still sends the bytes and reads the reply
    (``read_response``: its socket timeout, its disconnect on error).

    Anything unusual goes back to redis-py's own path: no idle connection (one is then
    taken from the pool), a health check being due, and every failure — a connection
    that fails is dropped (never reused with a reply in flight) and the command is sent
    again by ``execute_command`` with its retries, exactly as redis-py would retry it.
    Replies that are errors (``ResponseError``, e.g. NOSCRIPT) leave the connection clean
    and are raised."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self.pool = redis.connection_pool
        self.idle: list[AbstractConnection] = []
        # only connections of ``from_url`` (real Redis); the embedded store goes the usual way
        self.enabled = issubclass(getattr(self.pool, "connection_class", object), HiredisPacking)

    async def _take(self) -> AbstractConnection | None:
        """A connection for one direct exchange, or None: go redis-py's way."""
        if not self.enabled:
            return None
        conn = self.idle.pop() if self.idle else await self.pool.get_connection()
        if conn.health_check_interval or not conn.is_connected:  # type: ignore[attr-defined]
            await self.pool.release(conn)
            return None
        return conn

    async def __call__(self, *args: Any) -> Any:
        conn = await self._take()
        if conn is None:
            return await self.redis.execute_command(*args)
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            reply = await conn.read_response()
        except ResponseError:
            self.idle.append(conn)
            raise
        except (ConnectionError, TimeoutError, OSError):
            await self._drop(conn)
            return await self.redis.execute_command(*args)  # redis-py's retries from here
        except BaseException:
            await self._drop(conn)  # cancelled mid-command: a reply may still be on its way
            raise
        self.idle.append(conn)
        return reply

    async def pipeline(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Several read commands in one write and one wait, their replies in order. An
        error reply is raised (the first), after every reply has been read, so the
        connection stays clean. On a failed connection the commands are sent again by
        redis-py's pipeline: meant for reads, which can be repeated."""
        conn = await self._take()
        if conn is None:
            return await self._redis_pipeline(commands)
        try:
            await conn.send_packed_command([b for c in commands for b in conn.pack_command(*c)], check_health=False)
            replies = [await _reply(conn, None)]
            # the others have usually arrived with the first: one deadline for them all
            # rather than a timeout context each (~8 µs apiece)
            async with asyncio.timeout(conn.socket_timeout):  # type: ignore[attr-defined]
                for _ in commands[1:]:
                    replies.append(await _reply(conn, math.inf))
        except (ConnectionError, TimeoutError, OSError):
            await self._drop(conn)
            return await self._redis_pipeline(commands)
        except BaseException:
            await self._drop(conn)
            raise
        self.idle.append(conn)
        for r in replies:
            if isinstance(r, ResponseError):
                raise r
        return replies

    async def _redis_pipeline(self, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for c in commands:
            pipe.execute_command(*c)
        return await pipe.execute()

    async def _drop(self, conn: AbstractConnection) -> None:
        await conn.disconnect(nowait=True)
        await self.pool.release(conn)

    async def script(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """A registered ``Script`` by EVALSHA; loaded (redis-py's way) if Redis lacks it."""
        try:
            return await self("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await script(keys=keys, args=args)

    async def aclose(self) -> None:
        """Give the kept connections back to the pool (its ``aclose`` closes them)."""
        while self.idle:
            await self.pool.release(self.idle.pop())
