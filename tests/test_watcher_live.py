"""The watcher against a real Task Manager on a real redis-server: what the console shows
while workitems live, while the server restarts, and while it cannot be reached."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import signal
import time
from typing import Any, AsyncIterator

import httpx
import pytest
from rich.console import Console as RichConsole

from tests.factory import performed, progress, sq, v, workitem
from tests.servers import RedisProcess, ServerProcess, free_port, start_server
from upsrs.client import UpsClient
from upsrs.uids import new_uid
from watcher.config import WatchSettings
from watcher.model import Model
from watcher.service import run_terminal, run_web
from watcher.sync import Watcher
from watcher.terminal import render

pytestmark = pytest.mark.anyio
FAST = {"AIW_HEARTBEAT_INTERVAL": "0.5", "AIW_HEARTBEAT_TIMEOUT": "0.5"}


def settings(server: str, **kw: Any) -> WatchSettings:
    base = dict(server=server, ae_title="W" + new_uid()[-12:], port=free_port(), heartbeat_interval=0.5,
                heartbeat_timeout=0.5, backoff_initial=0.05, backoff_max=0.5, push_interval=0.05)
    return WatchSettings(**{**base, **kw})


@contextlib.asynccontextmanager
async def web_watcher(s: WatchSettings) -> AsyncIterator[httpx.AsyncClient]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_web(s, stop, install_signals=False))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}", timeout=10) as web:
        await until(lambda: status_of(web), lambda st: st["loaded"] and st["state"] == "connected", what="watcher live")
        try:
            yield web
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def status_of(web: httpx.AsyncClient) -> dict[str, Any]:
    return (await web.get("/api/status")).json()


async def until(fetch: Any, check: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await fetch()
            if check(last):
                return last
        except (httpx.HTTPError, OSError, KeyError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last: {str(last)[:800]}")


async def detail(web: httpx.AsyncClient, uid: str) -> dict[str, Any]:
    r = await web.get(f"/api/workitems/{uid}")
    r.raise_for_status()
    return r.json()


def seg_output(study: str) -> dict[str, Any]:
    return {"0040E020": v("CS", "DICOM"), "0020000D": v("UI", study), "0020000E": v("UI", new_uid()),
            "00081199": sq({"00081150": v("UI", "1.2.840.10008.5.1.4.1.1.66.4"), "00081155": v("UI", new_uid())}),
            "0040E025": sq({"00081190": v("UR", f"http://pacs/dicom-web/studies/{study}")})}


async def test_every_transition_appears_with_its_time_and_the_lock_is_released_after_retrieval(
        redis_proc: RedisProcess) -> None:
    env = {**FAST, "AIW_RETENTION_SECONDS": "0.3", "AIW_PURGE_INTERVAL_SECONDS": "0.1"}
    srv = start_server(redis_proc.url, extra_env=env)
    try:
        async with UpsClient(srv.url) as ups:
            before = (await ups.create(workitem(accession="ACC-BEFORE"))).uid  # exists before the watcher
            s = settings(srv.url, viewer_url_template="http://viewer/IHEInvokeImageDisplay?requestType=STUDY&studyUID={study_uid}",
                         cancel_tokens={"tok-qa": "qa lead"})
            async with web_watcher(s) as web:
                rows = (await web.get("/api/rows")).json()["rows"]
                assert [(r["accession"], r["state"]) for r in rows] == [("ACC-BEFORE", "SCHEDULED")]
                stamps: dict[str, tuple[float, float]] = {}

                async def step(name: str, coro: Any) -> Any:
                    t0 = time.time()
                    out = await coro
                    stamps[name] = (t0, time.time())
                    return out

                wi = workitem(accession="ACC-LIVE", priority="HIGH")
                study = wi["0020000D"]["Value"][0]
                uid = (await step("SCHEDULED", ups.create(wi))).uid
                await asyncio.sleep(0.3)
                tuid = await step("IN PROGRESS", ups.claim(uid))
                await asyncio.sleep(0.3)
                await ups.update(uid, progress(60, "segmenting"), tuid)
                await ups.update(uid, performed(outputs=[seg_output(study)]), tuid)
                await asyncio.sleep(0.3)
                await step("COMPLETED", ups.complete(uid, tuid))
                d = await until(lambda: detail(web, uid), lambda d: d["lock_released"], what="final recorded, lock released")
                assert [h["state"] for h in d["history"]] == ["SCHEDULED", "IN PROGRESS", "COMPLETED"]
                for h in d["history"]:
                    sent, answered = stamps[h["state"]]
                    assert sent <= h["at"] <= answered + 0.5, (h, stamps[h["state"]])
                assert d["final_recorded"] and d["outputs"][0]["kinds"] == ["SEG"]
                assert d["viewer_url"] == f"http://viewer/IHEInvokeImageDisplay?requestType=STUDY&studyUID={study}"
                assert (d["progress"], d["progress_text"], d["accession"]) == (60.0, "segmenting", "ACC-LIVE")
                assert any("Deletion lock released" in e["text"] for e in d["timeline"])
                # the lock is really gone: the server's record for this AE says "not subscribed",
                # and with no lock left the retention purge takes the workitem
                subs = redis_proc.client().hgetall(f"t{srv.port}:subs:{uid}")
                assert subs.get(s.ae_title.encode()) == b"X", subs
                async with httpx.AsyncClient(base_url=srv.url) as h:
                    await until(lambda: h.get(f"/workitems/{uid}"), lambda r: r.status_code == 410, what="purged")
                    # the workitem that is not final keeps its place (nothing to release)
                    assert (await h.get(f"/workitems/{before}")).status_code == 200

                # a failure: canceled with a coded reason shows in the "recently failed" view
                bad = (await ups.create(workitem(accession="ACC-BAD"))).uid
                btuid = await ups.claim(bad)
                await ups.update(bad, {"00741002": sq({"0074100E": sq({"00080100": v("SH", "110523"),
                                                                        "00080102": v("SH", "DCM"),
                                                                        "00080104": v("LO", "Object Set incomplete")}),
                                                       "00741238": v("LT", "series 3 missing")})}, btuid)
                # the cancel action of the console: refused without a token, accepted with one
                r = await web.post(f"/api/workitems/{bad}/cancel", json={"reason": "wrong series"})
                assert r.status_code == 403
                r = await web.post(f"/api/workitems/{bad}/cancel", json={"reason": "wrong series"},
                                   headers={"authorization": "Bearer tok-qa"})
                assert r.status_code == 202, r.text
                d = await until(lambda: detail(web, bad), lambda d: d["cancel_request"] is not None, what="cancel seen")
                assert d["cancel_request"]["reason"] == "wrong series" and d["cancel_request"]["requester"] == s.ae_title
                await ups.cancel(bad, btuid)
                a = await until(lambda: web.get("/api/attention"), lambda r: r.json()["counts"]["failed"] == 1)
                assert a.json()["failed"][0]["reason"] == "Object Set incomplete — series 3 missing"
                late = (await web.get("/api/attention")).json()["late"]
                assert late == []  # HIGH but well within the default 15 minute budget
    finally:
        srv.stop()


async def test_server_restart_mid_stream_loses_and_duplicates_no_row(redis_proc: RedisProcess) -> None:
    port, prefix = free_port(), f"wr{free_port()}:"
    srv: ServerProcess = start_server(redis_proc.url, port=port, prefix=prefix, extra_env=FAST)
    created: list[str] = []
    try:
        async with UpsClient(srv.url) as ups:
            s = settings(srv.url)
            async with web_watcher(s) as web:
                stop = asyncio.Event()
                seen_states: set[str] = set()

                async def produce() -> None:
                    while not stop.is_set():
                        try:
                            uid = (await ups.create(workitem(accession=f"ACC-{len(created)}"))).uid
                            created.append(uid)
                            if len(created) % 2:
                                t = await ups.claim(uid)
                                if len(created) % 3 == 0:
                                    await ups.update(uid, performed(), t)
                                    await ups.complete(uid, t)
                        except (httpx.HTTPError, OSError):
                            await asyncio.sleep(0.05)  # server down: try again

                async def observe() -> None:
                    while not stop.is_set():
                        with contextlib.suppress(httpx.HTTPError):
                            seen_states.add((await status_of(web))["state"])
                        await asyncio.sleep(0.02)

                tasks = [asyncio.create_task(produce()), asyncio.create_task(observe())]
                await until(lambda: status_of(web), lambda st: st["rows"] >= 15, what="rows flowing")
                srv.stop(signal.SIGTERM)
                await asyncio.sleep(0.5)
                srv = start_server(redis_proc.url, port=port, prefix=prefix, extra_env=FAST)
                await until(lambda: status_of(web), lambda st: st["state"] == "connected", what="reconnected")
                await asyncio.sleep(0.7)
                stop.set()
                await asyncio.gather(*tasks)
                assert "reconnecting" in seen_states
                truth = {ds["00080018"]["Value"][0]: ds["00741000"]["Value"][0]
                         async for ds in ups.search_all(page_size=500)}
                assert len(truth) == len(set(created)) > 20

                async def shown() -> dict[str, Any]:
                    return (await web.get("/api/rows")).json()

                snap = await until(shown, lambda d: {r["uid"]: r["state"] for r in d["rows"]} == truth, timeout=15,
                                   what="every row, in its state")
                assert len(snap["rows"]) == len(truth)  # no duplicate rows
                for uid in created[:5] + created[-5:]:
                    states = [h["state"] for h in (await detail(web, uid))["history"]]
                    assert len(states) == len(set(states))  # no transition twice
    finally:
        srv.stop()


async def test_unreachable_at_start_is_said_plainly_then_the_console_catches_up(redis_proc: RedisProcess) -> None:
    port = free_port()
    s = settings(f"http://127.0.0.1:{port}")
    watcher = Watcher(s, Model())
    out = RichConsole(width=180, record=True, file=io.StringIO())  # not a terminal: Live prints its last frame

    def screen() -> str:
        con = RichConsole(width=400, record=True, file=io.StringIO())
        con.print(render(watcher.model, watcher.status, s))
        return con.export_text()

    stop = asyncio.Event()
    task = asyncio.create_task(run_terminal(s, stop, console=out, refresh=0.05, watcher=watcher))
    srv = None
    try:
        await asyncio.sleep(1.0)
        text = screen()
        assert f"aiw watch — unreachable: Task Manager http://127.0.0.1:{port} is unreachable (ConnectError" in text
        attempts = re.search(r"retrying in [0-9.]+ s \(attempt (\d+)\)", text)
        assert attempts and int(attempts.group(1)) >= 2, text  # it keeps trying, with backoff
        srv = start_server(redis_proc.url, port=port, extra_env=FAST)
        async with UpsClient(srv.url) as ups:
            await ups.create(workitem(accession="ACC-LATE-UP"))
        deadline = time.monotonic() + 10
        while not ("ACC-LATE-UP" in screen() and "connected: subscribed" in screen()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        text = screen()
        assert "ACC-LATE-UP" in text and "aiw watch — connected: subscribed" in text
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        if srv:
            srv.stop()
    assert "ACC-LATE-UP" in out.export_text()  # the terminal console itself drew it
