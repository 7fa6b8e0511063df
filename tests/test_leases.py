"""Stale claims: a performer that stops reporting loses its workitem to a replacement."""

from __future__ import annotations

import time
from typing import Iterator

import httpx
import pytest

from tests import factory as f
from tests.servers import RedisProcess, ServerProcess, start_server, wait_until
from upsrs.uids import new_uid

pytestmark = pytest.mark.redis
LEASE = 1.0


@pytest.fixture
def lease_server(redis_proc: RedisProcess) -> Iterator[ServerProcess]:
    srv = start_server(redis_proc.url, extra_env={"AIW_LEASE_SECONDS": str(LEASE), "AIW_LEASE_MAX_ATTEMPTS": "2"})
    yield srv
    srv.stop()


def _http(srv: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"content-type": "application/dicom+json"}, timeout=30)


def _create(c: httpx.Client) -> str:
    uid = new_uid()
    assert c.post(f"/workitems?{uid}", json=f.workitem()).status_code == 201
    return uid


def _claim(c: httpx.Client, uid: str) -> str:
    tuid = new_uid()
    assert c.put(f"/workitems/{uid}/state", json=f.state("IN PROGRESS", tuid)).status_code == 200
    return tuid


def _get(c: httpx.Client, uid: str) -> dict:
    r = c.get(f"/workitems/{uid}")
    assert r.status_code == 200, r.text
    return r.json()[0]


def _state(c: httpx.Client, uid: str) -> str:
    return _get(c, uid)["00741000"]["Value"][0]


def _cancel_info(doc: dict) -> tuple[str, str]:
    item = doc["00741002"]["Value"][0]
    return item["0074100E"]["Value"][0]["00080100"]["Value"][0], item["00741238"]["Value"][0]


def _replacements_of(c: httpx.Client, uid: str) -> list[dict]:
    r = c.get("/workitems", params={"ProcedureStepState": "SCHEDULED", "includefield": "00741224"})
    found = [] if r.status_code == 204 else r.json()
    return [d for d in found
            if d.get("00741224", {}).get("Value", [{}])[0].get("00081155", {}).get("Value") == [uid]]


def test_dead_performer_is_replaced_and_the_replacement_completes(lease_server: ServerProcess) -> None:
    with _http(lease_server) as c:
        uid = _create(c)
        _claim(c, uid)
        wait_until(lambda: _state(c, uid) == "CANCELED", timeout=15, what="lease expiry")
        code, reason = _cancel_info(_get(c, uid))
        assert code == "110528"
        assert "stopped reporting" in reason and "attempt 2 of 2" in reason
        wait_until(lambda: _replacements_of(c, uid), timeout=10, what="replacement")
        (repl,) = _replacements_of(c, uid)
        new = repl["00080018"]["Value"][0]
        assert new in reason
        doc = _get(c, new)
        original = _get(c, uid)
        for tag in ("00100020", "0020000D", "00404018", "00404021", "0040A370"):
            assert doc[tag] == original[tag], tag
        assert "00741216" not in doc or not doc["00741216"].get("Value")
        # the replacement can be claimed and completed by a live performer
        tuid = _claim(c, new)
        assert c.post(f"/workitems/{new}?{tuid}", json=f.performed()).status_code == 200
        assert c.put(f"/workitems/{new}/state", json=f.state("COMPLETED", tuid)).status_code == 200


def test_a_performer_that_reports_keeps_its_workitem(lease_server: ServerProcess) -> None:
    with _http(lease_server) as c:
        uid = _create(c)
        tuid = _claim(c, uid)
        end = time.monotonic() + LEASE * 4
        while time.monotonic() < end:  # heartbeat: the same progress again
            assert c.post(f"/workitems/{uid}?{tuid}", json=f.progress(10, "model")).status_code == 200
            time.sleep(LEASE / 4)
        assert _state(c, uid) == "IN PROGRESS"
        assert not _replacements_of(c, uid)


def test_attempts_are_bounded(lease_server: ServerProcess) -> None:
    with _http(lease_server) as c:
        uid = _create(c)
        _claim(c, uid)
        wait_until(lambda: _replacements_of(c, uid), timeout=15, what="replacement")
        new = _replacements_of(c, uid)[0]["00080018"]["Value"][0]
        _claim(c, new)
        wait_until(lambda: _state(c, new) == "CANCELED", timeout=15, what="second expiry")
        code, reason = _cancel_info(_get(c, new))
        assert code == "110513"
        assert "Not rescheduled: 2 of 2 attempts used" in reason
        time.sleep(LEASE * 2)
        assert not _replacements_of(c, new)


def test_scheduled_and_final_workitems_have_no_lease(lease_server: ServerProcess) -> None:
    with _http(lease_server) as c:
        waiting = _create(c)
        done = _create(c)
        tuid = _claim(c, done)
        assert c.post(f"/workitems/{done}?{tuid}", json=f.performed()).status_code == 200
        assert c.put(f"/workitems/{done}/state", json=f.state("COMPLETED", tuid)).status_code == 200
        time.sleep(LEASE * 3)
        assert _state(c, waiting) == "SCHEDULED"
        assert _state(c, done) == "COMPLETED"


@pytest.mark.anyio
async def test_an_expiry_interrupted_after_the_cancel_is_finished_once() -> None:
    """The crash window between 'canceled' and 'replacement created' is closed by the
    journal, and the derived replacement UID makes finishing it twice harmless."""
    import fakeredis

    from ups_server import leases
    from ups_server.app import create_app
    from ups_server.settings import ServerSettings
    from upsrs import dicomjson as dj

    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7,)))
    app = create_app(ServerSettings(lease_seconds=0.05, log_json=True), redis=redis)
    service, watcher = app.state.workitems, app.state.leases
    uid = new_uid()
    await service.create(uid, f.workitem())
    await service.change_state(uid, f.state("IN PROGRESS", new_uid()))
    # the first two steps of an expiry, then a "crash"
    await redis.sadd(watcher.k_pending, uid)
    assert await service.cancel_by_scp(uid, "lease test", dict(leases.RESCHEDULED), lambda r: True)
    replacement = leases.replacement_uid(uid)
    assert await service.store.get(replacement) is None
    assert await watcher.scan() == [replacement]
    assert await watcher.scan() == []
    doc = dj.loads((await service.store.get(replacement)).doc)
    assert leases.replaced_uid(doc) == uid
    assert dj.first(doc, 0x00741000) == "SCHEDULED"
    assert not await redis.smembers(watcher.k_pending)
