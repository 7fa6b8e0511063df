"""``aiw request watch-orthanc``: Orthanc's change feed → workitems.

Orthanc numbers every change (``/changes?since=N``); a StableStudy change means no new
instance arrived for ``StableAge`` seconds. The last handled sequence number is written
to the state file after each change, so a restart resumes right after it: nothing is
missed, and a change handled just before a crash (cursor not yet written) is handled
again harmlessly (the workitem UID is per study and procedure; the server says 409).

Early workitems: a NewSeries change (a series started arriving) makes the study's workitems
INCOMPLETE with the instances there so far, where the template's input rules already hold
(a workitem is only useful early if its inputs are mostly known); StableStudy then gives
them the complete inputs and READY. Nothing is lost when the early step finds too little:
StableStudy creates the workitem READY.

A change whose study cannot be handled *now* (PACS or Task Manager unreachable) stops
the pass without advancing the cursor: it is retried on the next pass. A study that
cannot be handled *ever* (deleted, no matching series) is reported and passed over.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Sequence

import httpx

from requester_cli.qido import PacsError, Qido, StudyNotFound
from requester_cli.templates import ProcedureTemplate
from requester_cli.triggers import Report, Result, load_state, make_workitems, poll_forever, save_state
from upsrs.client import BadRequest, UpsClient


class OrthancWatcher:
    def __init__(self, orthanc_url: str, qido: Qido, ups: UpsClient, templates: Sequence[ProcedureTemplate],
                 state_path: Path, *, from_start: bool = False, report: Report = print, batch: int = 100,
                 early: bool = True):
        self.url = orthanc_url.rstrip("/")
        self.qido = qido
        self.ups = ups
        self.templates = list(templates)
        self.state_path = state_path
        self.from_start = from_start
        self.report = report
        self.batch = batch
        self.early = early
        self.http = qido.http
        self.state = load_state(state_path, {"orthanc": self.url, "last": None})
        self.latencies: list[float] = []  # seconds from seeing StableStudy to workitem created

    async def _json(self, path: str, **params: object) -> dict:
        try:
            resp = await self.http.get(f"{self.url}{path}", params=params)
        except httpx.HTTPError as exc:
            raise PacsError(f"Orthanc {self.url} is unreachable: {exc.__class__.__name__}: {exc}") from None
        if resp.status_code == 404:
            raise StudyNotFound(f"{path} is no longer in Orthanc {self.url}")
        if resp.status_code != 200:
            raise PacsError(f"Orthanc {self.url} refused {path} with HTTP {resp.status_code}")
        return resp.json()

    async def start_position(self) -> int:
        if self.state.get("last") is None:
            if self.from_start:
                self.state["last"] = 0
            else:  # a new watcher starts at the present, not at the archive's whole history
                self.state["last"] = int((await self._json("/changes", last="")).get("Last", 0))
            save_state(self.state_path, self.state)
        return int(self.state["last"])

    async def study_uid(self, orthanc_id: str) -> str:
        info = await self._json(f"/studies/{orthanc_id}")
        return str(info["MainDicomTags"]["StudyInstanceUID"])

    async def poll_once(self) -> list[Result]:
        """Handle every change after the cursor; returns what was done."""
        since = await self.start_position()
        results: list[Result] = []
        while True:
            page = await self._json("/changes", since=since, limit=self.batch)
            for change in page.get("Changes", []):
                seq = int(change["Seq"])
                if change.get("ChangeType") == "NewSeries" and self.early:
                    try:
                        series = await self._json(f"/series/{change['ID']}")
                        uid = await self.study_uid(series["ParentStudy"])
                        results += await make_workitems(self.qido, self.ups, self.templates, uid,
                                                        readiness="INCOMPLETE", report=self.report, quiet_skip=True)
                    except (StudyNotFound, BadRequest) as exc:  # gone already, or refused: StableStudy decides
                        self.report(f"no early workitem for change {seq}: {exc}")
                elif change.get("ChangeType") == "StableStudy":
                    seen = time.perf_counter()
                    try:
                        uid = await self.study_uid(change["ID"])
                        done = await make_workitems(self.qido, self.ups, self.templates, uid, report=self.report)
                    except StudyNotFound as exc:
                        self.report(f"skipped change {seq}: {exc}")
                    except BadRequest as exc:  # this workitem will never be accepted: do not block the feed
                        self.report(f"refused change {seq}: Task Manager: {exc}")
                    else:
                        results += done
                        if any(r.action == "created" for r in done):
                            self.latencies.append(time.perf_counter() - seen)
                since = seq
                self.state["last"] = seq
                save_state(self.state_path, self.state)
            last = int(page.get("Last", since))
            if page.get("Done", True) or not page.get("Changes"):
                if last > since:
                    since = last
                    self.state["last"] = since
                    save_state(self.state_path, self.state)
                return results

    async def run(self, interval: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Poll forever (or until ``stop``); transient errors are reported and retried."""
        await poll_forever(self.poll_once, self.report, interval, stop)
