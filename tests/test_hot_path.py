"""The hot-path shortcuts keep the behaviour of what they replace: the per-request log
line (ups_server.logs) and the Redis connection (ups_server.redisconn)."""

from __future__ import annotations

import asyncio
import io
import re

import orjson
import structlog

from tests.servers import RedisProcess
from ups_server import logs, redisconn


def test_request_line_is_the_structlog_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    fields = {"method": "PUT", "path": "/workitems/1.2/state", "status": 409, "ms": 0.42,
              "request_id": "abc", "workitem": "1.2", "outcome": "C301:missing"}
    lean, chain = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", lean)
    logs.configure(True, "info")
    structlog.contextvars.bind_contextvars(replica="r1")
    try:
        logs.request_line(dict(fields))
        monkeypatch.setattr("sys.stdout", chain)
        logs.configure(True, "info")
        structlog.reset_defaults()
        logs.configure(True, "info")
        structlog.get_logger("x").info("request", **fields)
    finally:
        structlog.contextvars.clear_contextvars()
        logs.configure(True, "info")
    a, b = orjson.loads(lean.getvalue()), orjson.loads(chain.getvalue())
    assert lean.getvalue().count("\n") == 1 and a["replica"] == "r1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", a["timestamp"])
    a.pop("timestamp"), b.pop("timestamp")
    assert a == b and list(a) == list(b)


def test_request_line_follows_the_level(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    try:
        logs.configure(True, "warning")
        logs.request_line({"status": 200})
        assert out.getvalue() == ""
    finally:
        logs.configure(True, "info")


class _Writes(io.StringIO):
    """A log file that counts its flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_request_lines_of_one_loop_turn_are_flushed_together_at_the_next() -> None:
    out = _Writes()
    line = logs._json_request_line(out)

    async def run() -> None:
        for n in range(5):  # five requests answered in one turn of the loop
            line({"status": 200, "n": n})
        assert out.getvalue().count("\n") == 5 and out.flushes == 0
        await asyncio.sleep(0)  # the next turn
        assert out.flushes == 1
        line({"status": 201})
        await asyncio.sleep(0)
        assert out.flushes == 2

    asyncio.run(run())
    assert [orjson.loads(t)["status"] for t in out.getvalue().splitlines()] == [200] * 5 + [201]
    line({"status": 202})  # no event loop (another thread, a script): flushed at once
    assert out.flushes == 3


def test_redis_connection_packs_and_sends_like_redis_py(redis_proc: RedisProcess) -> None:
    async def run() -> None:
        r = redisconn.from_url(redis_proc.url)
        try:
            big = b"\x00\xff" * 300_000  # above the transport's high-water mark
            await r.set("hp:big", big)
            assert await r.get("hp:big") == big
            await r.hset("hp:h", mapping={"s": "é", "i": 7, "f": 0.1, "b": b"x"})
            assert await r.hgetall("hp:h") == {b"s": "é".encode(), b"i": b"7", b"f": b"0.1", b"b": b"x"}
            pipe = r.pipeline(transaction=True)
            pipe.incr("hp:n")
            pipe.incr("hp:n")
            assert await pipe.execute() == [1, 2]
            assert (await r.execute_command("CONFIG GET", "maxmemory"))  # a name holding a space
            try:
                await r.set("hp:x", True)  # type: ignore[arg-type]
            except Exception as exc:
                assert "bool" in str(exc)
            else:
                raise AssertionError("redis-py refuses bool arguments")
            await r.delete("hp:big", "hp:h", "hp:n")
        finally:
            await r.aclose()

    asyncio.run(run())


def test_direct_commands_survive_errors_drops_and_cancellation(redis_proc: RedisProcess) -> None:
    """``redisconn.Direct``: replies and error replies as redis-py gives them, a killed
    connection retried by redis-py, a script Redis lost loaded again, and a command
    cancelled with its reply in flight never leaving that reply to the next command."""
    async def run() -> None:
        r = redisconn.from_url(redis_proc.url)
        direct = redisconn.Direct(r)
        try:
            await r.hset("dc:h", mapping={"a": "1", "b": b"\x00\xff"})
            assert await direct("HMGET", "dc:h", "a", "b", "c") == [b"1", b"\x00\xff", None]
            assert await direct("HGET", "dc:h", "a") == b"1"
            assert len(direct.idle) == 1
            try:
                await direct("HGET", "dc:h")  # wrong arity: an error reply
            except redisconn.ResponseError as exc:
                assert "wrong number" in str(exc)
            else:
                raise AssertionError("an error reply is raised")
            assert len(direct.idle) == 1 and await direct("HGET", "dc:h", "a") == b"1"  # still usable

            await r.client_kill_filter(_type="normal", skipme=True)  # the kept connection dies
            assert await direct("HGET", "dc:h", "b") == b"\x00\xff"  # retried on a new one

            script = r.register_script("return {KEYS[1], ARGV[1]}")
            assert await direct.script(script, ["k"], ["v"]) == [b"k", b"v"]
            await r.script_flush()
            assert await direct.script(script, ["k2"], [7]) == [b"k2", b"7"]  # loaded again

            await r.set("dc:slow", "x")
            slow = r.register_script("local t = redis.call('TIME'); while true do local n = redis.call('TIME');"
                                     " if (n[1] - t[1]) * 1000000 + n[2] - t[2] > 200000 then return 'late' end end")
            await r.script_load(slow.script)
            task = asyncio.ensure_future(direct("EVALSHA", slow.sha, 0))
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await asyncio.sleep(0.3)
            for _ in range(5):  # whichever connection comes next reads its own reply
                assert await direct("HGET", "dc:h", "a") == b"1"
        finally:
            await direct.aclose()
            await r.delete("dc:h", "dc:slow")
            await r.aclose()

    asyncio.run(run())


def test_direct_pipeline_replies_in_order_and_stays_clean(redis_proc: RedisProcess) -> None:
    """``Direct.pipeline``: every reply in order; an error reply raised only after the
    replies behind it were read (the next command reads its own reply); a killed
    connection sent again by redis-py; the embedded store's redis-py path alike."""
    async def run() -> None:
        r = redisconn.from_url(redis_proc.url)
        direct = redisconn.Direct(r)
        try:
            await r.hset("dp:h", mapping={"a": "1", "b": b"\x00\xff"})
            assert await direct.pipeline(("HGET", "dp:h", "a"), ("HMGET", "dp:h", "b", "c"), ("EXISTS", "dp:h")) \
                == [b"1", [b"\x00\xff", None], 1]
            assert await direct.pipeline(("MULTI",), ("HGET", "dp:h", "a"), ("HLEN", "dp:h"), ("EXEC",)) \
                == [b"OK", b"QUEUED", b"QUEUED", [b"1", 2]]
            try:
                await direct.pipeline(("HGET", "dp:h"), ("HGET", "dp:h", "b"), ("NO-SUCH-COMMAND",))
            except redisconn.ResponseError as exc:
                assert "wrong number" in str(exc)  # the first error
            else:
                raise AssertionError("an error reply is raised")
            assert len(direct.idle) == 1
            for _ in range(3):
                assert await direct("HGET", "dp:h", "a") == b"1"
                assert await direct.pipeline(("HGET", "dp:h", "b")) == [b"\x00\xff"]
            await r.client_kill_filter(_type="normal", skipme=True)  # the kept connection dies
            assert await direct.pipeline(("HGET", "dp:h", "a"), ("HGET", "dp:h", "b")) == [b"1", b"\x00\xff"]
        finally:
            await direct.aclose()
            await r.delete("dp:h")
            await r.aclose()

        import fakeredis

        embedded = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7,)))
        direct = redisconn.Direct(embedded)
        assert not direct.enabled
        await embedded.hset("dp:h", "a", "1")
        assert await direct.pipeline(("MULTI",), ("HGET", "dp:h", "a"), ("EXEC",)) == [b"OK", b"QUEUED", [b"1"]]

    asyncio.run(run())
