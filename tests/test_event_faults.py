"""The event channel under failure: kill -9 of the server mid-stream, delivery across
replicas, a stalled network, misbehaving clients, deletion locks against purge."""

from __future__ import annotations

import asyncio
import signal

import httpx
import orjson
import pytest
import websockets

from tests.factory import workitem
from tests.listen import Collector
from tests.proxy import StallingProxy
from tests.servers import RedisProcess, free_port, start_server
from upsrs.client import UpsClient
from upsrs.uids import new_uid

pytestmark = pytest.mark.anyio
FAST = {"AIW_HEARTBEAT_INTERVAL": "0.5", "AIW_HEARTBEAT_TIMEOUT": "0.5"}


def aet() -> str:
    return "F" + new_uid()[-12:]


def produced_for_global(redis_proc: RedisProcess, prefix: str) -> set[tuple[int, str, bytes]]:
    """Every workitem event in the stream (what a global subscriber must receive)."""
    out = set()
    for _id, f in redis_proc.client().xrange(f"{prefix}events"):
        if not f.get(b"to"):
            out.add((int(f[b"type"]), f[b"uid"].decode(), orjson.dumps(orjson.loads(f[b"body"]), option=orjson.OPT_SORT_KEYS)))
    return out


def received(c: Collector) -> set[tuple[int, str, bytes]]:
    cmd = ("00000002", "00000100", "00000110", "00001000", "00001002")
    return {(e.type, e.uid, orjson.dumps({k: v for k, v in e.dataset.items() if k not in cmd}, option=orjson.OPT_SORT_KEYS))
            for e in c.events if e.type != 4}


async def test_kill_9_mid_stream_loses_no_event(redis_proc: RedisProcess) -> None:
    port, prefix, me = free_port(), f"k{free_port()}:", aet()
    srv = start_server(redis_proc.url, port=port, prefix=prefix, extra_env=FAST)
    try:
        async with UpsClient(srv.url) as ups:
            await ups.subscribe(me)
            async with Collector(ups.channel_url(me)) as c:
                stop = asyncio.Event()

                async def produce() -> None:
                    while not stop.is_set():
                        try:
                            uid = (await ups.create(workitem())).uid
                            await ups.claim(uid)
                        except (httpx.HTTPError, OSError):
                            await asyncio.sleep(0.05)  # server down: try again

                producer = asyncio.create_task(produce())
                await c.wait(lambda: len(c.events) >= 30, what="events flowing")
                srv.stop(signal.SIGKILL)
                await asyncio.sleep(0.3)
                srv = start_server(redis_proc.url, port=port, prefix=prefix, extra_env=FAST)
                await c.wait(lambda: c.channel.connects >= 2, what="reconnect")
                await asyncio.sleep(1.0)
                stop.set()
                await producer
                expected = produced_for_global(redis_proc, prefix)
                assert len(expected) > 40
                await c.wait(lambda: expected <= received(c), timeout=15, what="every produced event")
                assert any(e.type == 4 and e.scp_status == "RESTARTED" for e in c.events)
    finally:
        srv.stop()


async def test_event_caused_on_replica_a_arrives_on_replica_b(redis_proc: RedisProcess) -> None:
    prefix, me = f"r{free_port()}:", aet()
    a = start_server(redis_proc.url, prefix=prefix)
    b = start_server(redis_proc.url, prefix=prefix)
    try:
        async with UpsClient(a.url) as on_a, UpsClient(b.url) as on_b:
            async with Collector(on_b.channel_url(me)) as c:
                await on_a.subscribe(me)  # subscription made on A ...
                uid = (await on_a.create(workitem())).uid  # ... change caused through A ...
                await c.wait(lambda: c.kinds(uid)[:1] == [(1, "SCHEDULED")], what="event on B")  # ... seen on B
                await on_b.claim(uid)
                await c.wait(lambda: (1, "IN PROGRESS") in c.kinds(uid), what="claim through B")
                assert len([e for e in c.of(uid) if e.type == 1]) == 2  # each event once, not once per replica
    finally:
        a.stop()
        b.stop()


async def test_stalled_network_is_detected_on_both_sides_and_heals(redis_proc: RedisProcess) -> None:
    me = aet()
    srv = start_server(redis_proc.url, extra_env=FAST)
    try:
        async with UpsClient(srv.url) as ups, StallingProxy(srv.port) as proxy:
            await ups.subscribe(me)
            async with Collector(f"ws://127.0.0.1:{proxy.port}/subscribers/{me}") as c:
                first = (await ups.create(workitem())).uid
                await c.wait(lambda: c.of(first), what="first event")
                proxy.stall()
                during = (await ups.create(workitem())).uid
                # the server notices the dead peer (no pongs) and frees the connection
                async with httpx.AsyncClient() as h:
                    async def connections() -> int:
                        return (await h.get(f"{srv.url}/healthz")).json()["connections"]
                    for _ in range(100):
                        if await connections() == 0:
                            break
                        await asyncio.sleep(0.1)
                    assert await connections() == 0
                # the client notices too, reconnects, and receives what it missed
                await c.wait(lambda: c.channel.status == "reconnecting" or c.channel.connects >= 2, what="client noticed")
                proxy.resume()
                await c.wait(lambda: c.channel.connects >= 2 and c.of(during), timeout=15, what="missed event replayed")
    finally:
        srv.stop()


async def test_garbage_frames_disconnect_only_that_client(redis_server_url: str) -> None:
    good, bad = aet(), aet()
    async with UpsClient(redis_server_url) as ups:
        await ups.subscribe(good)
        async with Collector(ups.channel_url(good)) as c:
            async with websockets.connect(ups.channel_url(bad)) as rude:
                await rude.send("garbage \x00 frame")
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(rude.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            uid = (await ups.create(workitem())).uid
            await c.wait(lambda: c.of(uid), what="the polite client still served")


async def test_malformed_channel_path_is_refused_and_unsubscribed_ae_accepted(redis_server_url: str) -> None:
    base = "ws" + redis_server_url[4:]
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"{base}/subscribers/{'X' * 17}"):
            pass
    assert refused.value.response.status_code == 403
    async with websockets.connect(f"{base}/subscribers/NOBODY_YET") as ws:  # allowed by the standard
        await ws.ping()


async def test_going_down_on_clean_shutdown(redis_proc: RedisProcess) -> None:
    me = aet()
    srv = start_server(redis_proc.url, extra_env=FAST)
    async with UpsClient(srv.url) as ups:
        await ups.subscribe(me)
        async with Collector(ups.channel_url(me)) as c:
            await asyncio.sleep(0.2)
            srv.stop(signal.SIGTERM)
            await c.wait(lambda: any(e.scp_status == "GOING DOWN" for e in c.events), what="GOING DOWN")


async def test_deletion_locks_hold_final_workitems_back_from_purge(redis_proc: RedisProcess) -> None:
    env = {"AIW_RETENTION_SECONDS": "0.5", "AIW_PURGE_INTERVAL_SECONDS": "0.1"}
    srv = start_server(redis_proc.url, extra_env=env)
    watcher, locker = aet(), aet()
    try:
        async with UpsClient(srv.url) as ups, httpx.AsyncClient(base_url=srv.url) as h:
            await ups.subscribe(watcher, deletion_lock=True)  # global with lock: inherited locks
            held = (await ups.create(workitem())).uid
            by_item = (await ups.create(workitem())).uid
            free = (await ups.create(workitem())).uid
            await ups.unsubscribe(watcher, by_item)
            await ups.unsubscribe(watcher, free)
            await ups.subscribe(locker, by_item, deletion_lock=True)
            for uid in (held, by_item, free):
                await ups.request_cancellation(uid)
            await asyncio.sleep(1.5)
            assert (await h.get(f"/workitems/{free}")).status_code == 410
            assert (await h.get(f"/workitems/{held}")).status_code == 200
            assert (await h.get(f"/workitems/{by_item}")).status_code == 200
            await ups.subscribe(locker, by_item, deletion_lock=False)  # re-subscribing without lock releases it
            await ups.unsubscribe(watcher, held)  # the watcher's pattern: retrieve, then unsubscribe
            await asyncio.sleep(1.5)
            assert (await h.get(f"/workitems/{held}")).status_code == 410
            assert (await h.get(f"/workitems/{by_item}")).status_code == 410
    finally:
        srv.stop()
