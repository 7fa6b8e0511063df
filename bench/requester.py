"""Benchmark: the Task Requester (issue 5, "Measure"). Run: ``python -m bench.requester``.

Real processes: our own redis-server, ``aiw server`` over it, Orthanc 1.10 + DICOMweb
(StableAge 1 s, so a study is stable one second after its last instance). The requester
runs in this process, as ``aiw request watch-orthanc`` runs it (requester_cli.watch_orthanc)
with the shipped sample template (requester_cli/templates/aiw-reference.toml: one
procedure, prior "optional", so each study costs: Orthanc ``/studies/{id}``, one
instance-level QIDO-RS of the study, one WADO-RS metadata request (Orthanc 1.10 returns no
Issuer of Accession Number Sequence in QIDO), one study-level QIDO-RS for priors, and the
Create).

1. StableStudy → workitem created. LATENCY_N studies are stored one at a time (each after
   the previous one's workitem exists). An observer polls Orthanc's ``/changes`` every
   20 ms and timestamps when each StableStudy becomes visible; the watcher polls every
   ``WATCH_INTERVAL`` s; latency = the Create's 201 received − StableStudy visible (so it
   includes the watcher's poll wait, on average half its interval, ±10 ms of observer
   granularity).
2. Bulk: BULK_N stored studies → their workitems via the same code the triggers use
   (``triggers.make_workitems``), one at a time and 8 at a time; workitems per second of
   wall time (each run against a fresh Task Manager key prefix, so every one is a Create).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

import tests.orthanc as torthanc
from performers import synthetic
from performers.dicomweb import store_instances
from requester_cli import templates as tpl
from requester_cli.qido import Qido
from requester_cli.triggers import make_workitems
from requester_cli.watch_orthanc import OrthancWatcher
from tests.servers import start_redis, start_server
from upsrs.client import UpsClient

LATENCY_N = 20
BULK_N = 100
WATCH_INTERVAL = 0.1
SHAPE = dict(shape=(64, 64, 24), spacing=(3.0, 3.0, 5.0), n_lesions=1)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


async def latency(orthanc: torthanc.Orthanc, server: str, tmp: Path) -> list[float]:
    templates = tpl.load(tpl.SAMPLE)
    created: dict[str, float] = {}
    visible: dict[str, float] = {}

    def report(line: str) -> None:
        if line.startswith("created "):
            created[line.split()[3]] = time.perf_counter()

    async with Qido(orthanc.dicomweb_url) as qido, UpsClient(server) as ups, httpx.AsyncClient() as http:
        last = (await http.get(f"{orthanc.url}/changes", params={"last": ""})).json()["Last"]
        watcher = OrthancWatcher(orthanc.url, qido, ups, templates, tmp / "cursor.json", report=report)
        await watcher.start_position()
        stop = asyncio.Event()

        async def observe() -> None:
            since = last
            while not stop.is_set():
                page = (await http.get(f"{orthanc.url}/changes", params={"since": since, "limit": 100})).json()
                for c in page["Changes"]:
                    if c["ChangeType"] == "StableStudy":
                        info = (await http.get(f"{orthanc.url}/studies/{c['ID']}")).json()
                        visible.setdefault(info["MainDicomTags"]["StudyInstanceUID"], time.perf_counter())
                    since = c["Seq"]
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(observe()), asyncio.create_task(watcher.run(WATCH_INTERVAL, stop))]
        out = []
        for i in range(LATENCY_N + 1):  # the first one warms up
            s = synthetic.make_study(5000 + i, **SHAPE)
            await asyncio.to_thread(store_instances, orthanc.dicomweb_url, s.flair.datasets)
            deadline = time.monotonic() + 30
            while s.study_uid not in created or s.study_uid not in visible:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no workitem for study {s.study_uid}")
                await asyncio.sleep(0.01)
            if i:
                out.append(created[s.study_uid] - visible[s.study_uid])
        stop.set()
        await asyncio.gather(*tasks)
    return out


async def bulk(orthanc: torthanc.Orthanc, server: str, studies: list[str], concurrency: int) -> float:
    templates = tpl.load(tpl.SAMPLE)
    sem = asyncio.Semaphore(concurrency)
    async with Qido(orthanc.dicomweb_url) as qido, UpsClient(server) as ups:
        async def one(uid: str) -> None:
            async with sem:
                results = await make_workitems(qido, ups, templates, uid)
                assert [r.action for r in results] == ["created"], results

        t = time.perf_counter()
        await asyncio.gather(*(one(u) for u in studies))
        return time.perf_counter() - t


def main() -> None:
    if not torthanc.orthanc_available():
        sys.exit(f"Orthanc is not installed ({torthanc.INSTALL_HINT})")
    tmp = Path(tempfile.mkdtemp(prefix="aiw-bench-requester-"))
    redis = start_redis()
    orthanc = torthanc.start_orthanc(tmp / "orthanc", extra_config={"StableAge": 1})
    servers = [start_server(redis.url) for _ in range(3)]
    try:
        lat = asyncio.run(latency(orthanc, servers[0].url, tmp))
        t = time.perf_counter()
        uids = []
        for i in range(BULK_N):
            s = synthetic.make_study(9000 + i, **SHAPE)
            store_instances(orthanc.dicomweb_url, s.flair.datasets)
            uids.append(s.study_uid)
        stored = time.perf_counter() - t
        seq = asyncio.run(bulk(orthanc, servers[1].url, uids, 1))
        par = asyncio.run(bulk(orthanc, servers[2].url, uids, 8))
    finally:
        for s in servers:
            s.stop()
        orthanc.stop()
        redis.stop()
    n_inst = SHAPE["shape"][2]
    print(f"""## Task Requester: from a stable study to its workitem

`python -m bench.requester` (bench/requester.py). Real redis-server, `aiw server`, Orthanc 1.10 +
DICOMweb (StableAge 1 s); the requester code of `aiw request watch-orthanc` in the bench process,
sample template (one procedure, prior lookup on). Studies: synthetic MR, one series of {n_inst}
instances of 64×64. Per study: Orthanc `/studies/{{id}}`, one instance-level QIDO-RS, one WADO-RS
metadata request (Orthanc 1.10 leaves Issuer of Accession Number Sequence out of QIDO answers),
one study-level QIDO-RS for a prior, one Create. 2 shared CPU cores.

| measure | value |
|---|---|
| StableStudy visible in `/changes` → workitem created (201), p50 | {pct(lat, 50) * 1000:.0f} ms |
| same, p95 | {pct(lat, 95) * 1000:.0f} ms |
| same, max (n = {len(lat)}) | {max(lat) * 1000:.0f} ms |
| bulk: {BULK_N} studies' workitems, one at a time | {BULK_N / seq:.1f} workitems/s ({seq:.2f} s) |
| bulk: {BULK_N} studies' workitems, 8 at a time | {BULK_N / par:.1f} workitems/s ({par:.2f} s) |

Latency includes the watcher's poll wait (`--interval` {WATCH_INTERVAL} s here: {WATCH_INTERVAL * 500:.0f} ms on
average); the default `--interval` of 1 s adds ~0.5 s on average. Orthanc itself declares a study
stable only StableAge seconds (default 60) after its last instance; that wait is not in these
numbers. (Storing the {BULK_N} studies by STOW-RS took {stored:.1f} s and is not timed above.)""")


if __name__ == "__main__":
    main()
