"""Two performers claim the same workitem at the same moment: exactly one wins, every time."""

from __future__ import annotations

import anyio
import httpx
import orjson

from tests.factory import state, workitem
from upsrs.uids import new_uid

ROUNDS = 100


def test_two_concurrent_claimers_exactly_one_wins(server_url: str) -> None:
    async def main() -> None:
        limits = httpx.Limits(max_connections=4)
        headers = {"content-type": "application/dicom+json"}
        async with httpx.AsyncClient(base_url=server_url, headers=headers, limits=limits) as a, \
                httpx.AsyncClient(base_url=server_url, headers=headers, limits=limits) as b:
            for _ in range(ROUNDS):
                created = await a.post("/workitems", content=orjson.dumps(workitem(worklist="RACE")))
                uid = created.headers["location"].rsplit("/", 1)[1]
                tuids = (new_uid(), new_uid())
                results: dict[int, httpx.Response] = {}

                async def claim(i: int, c: httpx.AsyncClient) -> None:
                    results[i] = await c.put(f"/workitems/{uid}/state", content=orjson.dumps(state("IN PROGRESS", tuids[i])))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(claim, 0, a)
                    tg.start_soon(claim, 1, b)
                codes = sorted(r.status_code for r in results.values())
                assert codes[0] == 200 and codes[1] in (400, 409), codes
                winner = 0 if results[0].status_code == 200 else 1
                loser = results[1 - winner]
                assert loser.headers["warning"].endswith("The Transaction UID is incorrect.")
                # the winner's Transaction UID is the lock: the loser's is refused, the winner's works
                wrong = await a.put(f"/workitems/{uid}/state", content=orjson.dumps(state("CANCELED", tuids[1 - winner])))
                assert wrong.status_code == 400
                right = await a.put(f"/workitems/{uid}/state", content=orjson.dumps(state("CANCELED", tuids[winner])))
                assert right.status_code == 200, right.text

    anyio.run(main)
