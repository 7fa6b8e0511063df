"""``aiw request watch-dicomweb``: any DICOMweb origin, polled → workitems.

QIDO-RS has no "modified since" key, so "updated since the last poll" is observed: each
poll lists the studies of a Study Date window (today minus ``lookback_days`` onwards)
with their Number of Study Related Instances, and a study whose count differs from the
one remembered in the cursor file was updated. A study whose count has not changed for
``stable_age`` seconds is stable:
  * first seen young (still arriving): its workitems are created at once with Input
    Readiness State INCOMPLETE, so performers and QA see what is coming;
  * once stable: created READY, or the INCOMPLETE one is given the complete input list
    and READY (a SCHEDULED workitem needs no Transaction UID for that).
Studies are remembered (cursor file) until they leave the date window, so a restart
neither misses a study nor creates one twice (the workitem UID is per study and
procedure as well). Studies without a Study Date are outside every window.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Callable, Sequence


from requester_cli.qido import Qido, StudyNotFound
from requester_cli.templates import ProcedureTemplate
from requester_cli.triggers import Report, Result, load_state, make_workitems, poll_forever, save_state
from upsrs import dicomjson as dj
from upsrs.client import BadRequest, UpsClient

PAGE = 500


class DicomwebWatcher:
    def __init__(self, qido: Qido, ups: UpsClient, templates: Sequence[ProcedureTemplate], state_path: Path, *,
                 stable_age: float = 60.0, lookback_days: int = 1, report: Report = print,
                 clock: Callable[[], float] = time.time):
        self.qido = qido
        self.ups = ups
        self.templates = list(templates)
        self.state_path = state_path
        self.stable_age = stable_age
        self.lookback_days = lookback_days
        self.report = report
        self.clock = clock
        self.state = load_state(state_path, {"origin": qido.base, "studies": {}})

    async def _list(self, date_from: str) -> dict[str, tuple[int, str]]:
        """Study UID -> (instance count, Study Date) for the window, page by page."""
        out: dict[str, tuple[int, str]] = {}
        offset = 0
        while True:
            page = await self.qido.studies([("StudyDate", f"{date_from}-"), ("limit", str(PAGE)),
                                            ("offset", str(offset)),
                                            ("includefield", "NumberOfStudyRelatedInstances,StudyDate")])
            for ds in page:
                uid = dj.first(ds, 0x0020000D)
                if uid:
                    out[str(uid)] = (int(dj.first(ds, 0x00201208) or 0), str(dj.first(ds, 0x00080020) or ""))
            if len(page) < PAGE:
                return out
            offset += len(page)

    async def poll_once(self) -> list[Result]:
        now = self.clock()
        date_from = (datetime.fromtimestamp(now) - timedelta(days=self.lookback_days)).strftime("%Y%m%d")
        listed = await self._list(date_from)
        known: dict[str, dict] = self.state["studies"]
        results: list[Result] = []
        for uid, (count, _date) in listed.items():
            rec = known.get(uid)
            if rec is None or rec["count"] != count:
                if rec is not None and rec.get("ready"):
                    self.report(f"study {uid} changed after its workitems were made READY ({rec['count']} -> "
                                f"{count} instances); not changed")
                    rec["count"] = count
                    continue
                rec = known[uid] = {"count": count, "changed": now, "ready": False,
                                    "incomplete": bool(rec and rec.get("incomplete"))}
            if rec["ready"]:
                continue
            stable = now - rec["changed"] >= self.stable_age
            if not stable and rec["incomplete"]:
                continue
            try:
                done = await make_workitems(self.qido, self.ups, self.templates, uid,
                                            readiness="READY" if stable else "INCOMPLETE", report=self.report)
            except StudyNotFound as exc:  # deleted between the list and the read
                self.report(f"skipped: {exc}")
                known.pop(uid, None)
                continue
            except BadRequest as exc:  # never acceptable: remember it as handled
                self.report(f"refused study {uid}: Task Manager: {exc}")
                done = []
                stable = True
            results += done
            made = any(r.action != "skipped" for r in done)
            rec["ready" if stable else "incomplete"] = stable or made
            save_state(self.state_path, self.state)
        for uid in [u for u in known if u not in listed]:  # left the date window (or deleted)
            del known[uid]
        self.state["last_poll"] = now
        save_state(self.state_path, self.state)
        return results

    async def run(self, interval: float = 10.0, stop: asyncio.Event | None = None) -> None:
        await poll_forever(self.poll_once, self.report, interval, stop)
