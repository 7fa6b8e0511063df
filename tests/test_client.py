"""The upsrs async client against the real server: typed results and typed errors."""

from __future__ import annotations

import anyio
import pytest

from tests.factory import performed, progress, workitem
from upsrs import client as ups


def run(coro):  # type: ignore[no-untyped-def]
    return anyio.run(lambda: coro)


def test_client_lifecycle_and_errors(server_url: str) -> None:
    async def main() -> None:
        async with ups.UpsClient(server_url) as c:
            created = await c.create(workitem(patient_id="CLIENT-1", worklist="CLIENT"))
            assert created.uid and created.location.endswith(created.uid)
            got = await c.retrieve(created.uid)
            assert got["00741000"]["Value"] == ["SCHEDULED"]
            tuid = await c.claim(created.uid)
            with pytest.raises(ups.BadRequest) as lost:
                await c.claim(created.uid)  # a second claimer: C301, Transaction UID incorrect
            assert lost.value.warning == "The Transaction UID is incorrect."
            await c.update(created.uid, progress(10), tuid)
            with pytest.raises(ups.BadRequest) as missing:
                await c.update(created.uid, progress(20))
            assert missing.value.warning == "The Transaction UID is missing."
            await c.update(created.uid, performed(), tuid)
            assert (await c.complete(created.uid, tuid)).warnings == []
            again = await c.complete(created.uid, tuid)
            assert again.warnings == ["The UPS is already in the requested state of COMPLETED."]
            with pytest.raises(ups.WorkitemNotFound):
                await c.retrieve("1.2.3.4.5.6.7.8.9")
            with pytest.raises(ups.Conflict):
                await c.request_cancellation(created.uid, reason="too late")
            for _ in range(4):
                await c.create(workitem(patient_id="CLIENT-2", worklist="CLIENT"))
            page = await c.search({"PatientID": "CLIENT-2"}, limit=3)
            assert len(page.items) == 3 and page.remaining == 1
            every = [x async for x in c.search_all({"PatientID": "CLIENT-2"}, page_size=2)]
            assert len(every) == 4
            assert len({x["00080018"]["Value"][0] for x in every}) == 4
            empty = await c.search({"PatientID": "NOBODY-AT-ALL"})
            assert empty.items == [] and empty.remaining == 0

    anyio.run(main)
