"""Final workitems are kept for the configured retention, then answer 410 Gone."""

from __future__ import annotations

import time

import httpx
import orjson

from tests.factory import workitem
from tests.servers import RedisProcess, start_server, wait_until


def test_final_workitems_purged_after_retention_then_410(redis_proc: RedisProcess) -> None:
    srv = start_server(redis_proc.url, extra_env={"AIW_RETENTION_SECONDS": "1", "AIW_PURGE_INTERVAL_SECONDS": "0.2"})
    try:
        with httpx.Client(base_url=srv.url, headers={"content-type": "application/dicom+json"}) as c:
            done = c.post("/workitems", content=orjson.dumps(workitem(worklist="RETAIN", patient_id="RET-1")))
            uid = done.headers["location"].rsplit("/", 1)[1]
            keep = c.post("/workitems", content=orjson.dumps(workitem(worklist="RETAIN", patient_id="RET-1")))
            kept = keep.headers["location"].rsplit("/", 1)[1]
            assert c.post(f"/workitems/{uid}/cancelrequest").status_code == 202
            assert c.get(f"/workitems/{uid}").status_code == 200  # kept during retention
            wait_until(lambda: c.get(f"/workitems/{uid}").status_code == 410, timeout=10, what="purge")
            gone = c.get(f"/workitems/{uid}")
            assert "retention" in gone.headers["warning"]
            # gone from search and its indexes; the SCHEDULED one is untouched
            found = c.get("/workitems", params={"WorklistLabel": "RETAIN"}).json()
            assert [r["00080018"]["Value"][0] for r in found] == [kept]
            assert c.get("/workitems", params={"PatientID": "RET-1", "ProcedureStepState": "CANCELED"}).status_code == 204
            # a purged UID cannot be reused: it answers 409 like any existing workitem
            again = c.post(f"/workitems?workitem={uid}", content=orjson.dumps(workitem(worklist="RETAIN")))
            assert again.status_code == 409
            time.sleep(1.5)
            assert c.get(f"/workitems/{kept}").status_code == 200
    finally:
        srv.stop()
