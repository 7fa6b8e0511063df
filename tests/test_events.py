"""Subscriptions and event reports over real WebSockets and a real redis-server
(PS3.4 CC.2.3–CC.2.4; spec digest sec. 4)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.factory import code, performed, progress, sq, v, workitem
from tests.listen import Collector
from upsrs.client import UpsClient
from upsrs.uids import new_uid

pytestmark = pytest.mark.anyio
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"


def aet() -> str:
    return "T" + new_uid()[-12:]


async def test_workitem_subscription_initial_report_and_every_change(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        uid = (await ups.create(workitem(readiness="INCOMPLETE"))).uid
        async with Collector(ups.channel_url(me)) as c:
            url = await ups.subscribe(me, uid)
            assert url == ups.channel_url(me)
            await c.wait(lambda: len(c.of(uid)) == 1, what="initial report")
            assert c.kinds(uid) == [(1, "SCHEDULED")] and c.of(uid)[0].readiness == "INCOMPLETE"
            await ups.update(uid, {"00404041": v("CS", "READY")})
            await ups.update(uid, {"00404025": sq(code("NODE-2", "99AIW", "node two"))})
            tuid = await ups.claim(uid)
            await ups.update(uid, progress(55, "model"), tuid)
            await ups.request_cancellation(uid, reason="recall", requester="RIS_AE", contact_uri="mailto:ris@example.org")
            await ups.update(uid, performed(), tuid)
            await ups.complete(uid, tuid)
            await c.wait(lambda: len(c.of(uid)) == 7, what="seven events")
            got = c.of(uid)
            assert [e.type for e in got] == [1, 1, 5, 1, 3, 2, 1]
            assert got[1].readiness == "READY" and got[3].state == "IN PROGRESS" and got[6].state == "COMPLETED"
            assert got[2].dataset["00404025"]["Value"][0]["00080100"]["Value"] == ["NODE-2"]
            assert got[4].progress == "55"
            assert got[5].requesting_ae == "RIS_AE" and got[5].value(0x0074100A) == "mailto:ris@example.org"
            ids = [e.message_id for e in got]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            for e in got:  # the command attributes of every message (spec sec. 1.3.11)
                assert e.dataset["00000002"] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.34.6.1"]}
                assert e.dataset["00001000"]["Value"] == [uid] and e.dataset["00001002"]["vr"] == "US"
                assert "00081195" not in e.dataset


async def test_channel_opened_after_subscribing_still_gets_the_initial_report(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        uid = (await ups.create(workitem())).uid
        await ups.subscribe(me, uid, deletion_lock=True)
        async with Collector(ups.channel_url(me)) as c:
            await c.wait(lambda: c.kinds(uid) == [(1, "SCHEDULED")], what="replayed initial report")


async def test_global_subscription_sees_new_workitems_and_assignment(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        async with Collector(ups.channel_url(me)) as c:
            await ups.subscribe(me)  # global, no lock: no initial reports for existing workitems
            await c.quiet()
            assert not [e for e in c.events if e.type == 1]
            wi = workitem()
            wi["00404034"] = sq({"00404009": sq(code("RAD1", "99HOSP", "Radiologist")), "00404037": v("PN", {"Alphabetic": "A^B"}),
                                 "00404036": v("LO", "HOSP")})
            uid = (await ups.create(wi)).uid
            await c.wait(lambda: [t for t, _ in c.kinds(uid)] == [1, 5], what="report + assigned")
            assigned = c.of(uid)[1].dataset
            assert assigned["00404009"]["Value"][0]["00080100"]["Value"] == ["RAD1"]
            assert assigned["00404036"]["Value"] == ["HOSP"]


async def test_global_subscription_with_lock_reports_every_existing_workitem(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        uids = [(await ups.create(workitem())).uid for _ in range(3)]
        async with Collector(ups.channel_url(me)) as c:
            await ups.subscribe(me, deletion_lock=True)
            await c.wait(lambda: all(c.kinds(u) == [(1, "SCHEDULED")] for u in uids), what="initial reports")


@pytest.mark.parametrize("syntax", ["filter", "plain"])
async def test_filtered_subscription_both_syntaxes(redis_server_url: str, syntax: str) -> None:
    me, label = aet(), "F" + new_uid()[-10:]
    async with UpsClient(redis_server_url) as ups:
        before = (await ups.create(workitem(worklist=label))).uid
        other = (await ups.create(workitem(worklist="ELSEWHERE"))).uid
        async with Collector(ups.channel_url(me)) as c:
            if syntax == "filter":
                url = f"{redis_server_url}/workitems/{FILTERED}/subscribers/{me}?deletionlock=true&filter=WorklistLabel%3D{label}"
            else:
                url = f"{redis_server_url}/workitems/{FILTERED}/subscribers/{me}?deletionlock=true&WorklistLabel={label}"
            r = await ups.http.post(url)
            assert r.status_code == 201 and r.headers["content-location"].endswith(f"/subscribers/{me}")
            await c.wait(lambda: c.kinds(before) == [(1, "SCHEDULED")], what="initial report of the existing match")
            after = (await ups.create(workitem(worklist=label))).uid
            late = (await ups.create(workitem(worklist="ELSEWHERE"))).uid
            await c.wait(lambda: c.kinds(after)[:1] == [(1, "SCHEDULED")], what="new matching workitem")
            await ups.claim(after)
            await c.wait(lambda: (1, "IN PROGRESS") in c.kinds(after), what="its claim")
            await c.quiet()
            assert c.of(other) == [] and c.of(late) == []


async def test_filter_with_sequence_keys_and_encoded_values(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        async with Collector(ups.channel_url(me)) as c:
            await ups.subscribe(me, filter={"ScheduledWorkitemCodeSequence.CodeValue": "AIW,X=1"})
            hit = (await ups.create(workitem(workitem_code=("AIW,X=1", "99AIW", "odd code")))).uid
            miss = (await ups.create(workitem())).uid
            await c.wait(lambda: c.of(hit), what="matching code")
            await c.quiet()
            assert c.of(miss) == []


async def test_suspend_stops_new_workitems_only(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        async with Collector(ups.channel_url(me)) as c:
            await ups.subscribe(me)
            old = (await ups.create(workitem())).uid
            await c.wait(lambda: c.of(old), what="old workitem")
            await ups.suspend(me)
            new = (await ups.create(workitem())).uid
            await ups.claim(old)
            await c.wait(lambda: (1, "IN PROGRESS") in c.kinds(old), what="existing subscription still live")
            await c.quiet()
            assert c.of(new) == []
        with pytest.raises(Exception) as nothing:
            await ups.suspend(aet())
        assert getattr(nothing.value, "status", None) == 404


async def test_unsubscribe_workitem_and_global(redis_server_url: str) -> None:
    me = aet()
    async with UpsClient(redis_server_url) as ups:
        async with Collector(ups.channel_url(me)) as c:
            await ups.subscribe(me)
            a = (await ups.create(workitem())).uid
            b = (await ups.create(workitem())).uid
            await c.wait(lambda: c.of(a) and c.of(b), what="both created")
            await ups.unsubscribe(me, a)  # this workitem only
            await ups.claim(a)
            await ups.claim(b)
            await c.wait(lambda: (1, "IN PROGRESS") in c.kinds(b), what="b still subscribed")
            assert (1, "IN PROGRESS") not in c.kinds(a)
            await ups.unsubscribe(me)  # globally: everything ends
            x = (await ups.create(workitem())).uid
            await c.quiet()
            assert c.of(x) == []


async def test_cancel_request_reaches_the_subscribed_performer(redis_server_url: str) -> None:
    performer = aet()
    async with UpsClient(redis_server_url) as ups:
        uid = (await ups.create(workitem())).uid
        async with Collector(ups.channel_url(performer)) as c:
            await ups.subscribe(performer, uid)
            await ups.claim(uid)
            code_item = ("110514", "DCM", "Incorrect worklist entry selected")
            await ups.request_cancellation(uid, reason="wrong patient", reason_code=code_item, contact_name="Desk")
            await c.wait(lambda: any(e.type == 2 for e in c.of(uid)), what="cancel requested")
            e = next(e for e in c.of(uid) if e.type == 2)
            assert e.requesting_ae == "UNKNOWN_AE" and e.value(0x00741238) == "wrong patient"
            assert e.dataset["0074100E"]["Value"][0]["00080100"]["Value"] == ["110514"]
            assert e.value(0x0074100C) == "Desk"


async def test_bad_subscription_requests(redis_server_url: str) -> None:
    async with httpx.AsyncClient(base_url=redis_server_url) as h:
        uid = (await h.post("/workitems", content=orjson.dumps(workitem()),
                            headers={"content-type": "application/dicom+json"})).headers["location"].rsplit("/", 1)[1]
        assert (await h.post("/workitems/1.2.3.999/subscribers/AE1")).status_code == 404
        bad_lock = await h.post(f"/workitems/{uid}/subscribers/AE1?deletionlock=maybe")
        assert bad_lock.status_code == 400 and "deletionlock" in bad_lock.headers["warning"]
        no_filter = await h.post(f"/workitems/{FILTERED}/subscribers/AE1")
        assert no_filter.status_code == 400 and "matching keys" in no_filter.headers["warning"]
        assert (await h.post(f"/workitems/{uid}/subscribers/{'A' * 17}")).status_code == 400
        assert (await h.post(f"/workitems/{uid}/subscribers/BAD%5CAE")).status_code == 400
        unknown_key = await h.post(f"/workitems/{FILTERED}/subscribers/AE1?filter=NoSuchKeyword%3Dx")
        assert unknown_key.status_code == 400
        assert (await h.delete("/workitems/1.2.3.999/subscribers/AE1")).status_code == 404
