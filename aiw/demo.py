"""``aiw demo``: the whole AIW-I loop on one machine, in one command.

Task Manager + (built-in) DICOMweb store on one port, the performer agent and an rq worker
as threads of this process, a generated MR study with a prior stored in the PACS, one
workitem created, its progress followed on the event channel like any Watcher would, and
the SR's findings and the stored objects shown at the end. Every actor talks to the
others over HTTP and WebSocket exactly as separate deployments do; only the process
boundaries are folded for the convenience of one command.

Redis: ``--redis-url`` if given; else a private redis-server on a free port when the
binary is installed (never the machine's shared one); else the embedded store for the
Task Manager and an in-process queue for the performer.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
from rich.console import Console
from rich.table import Table

from upsrs import dicomjson as dj
from upsrs.client import UpsClient
from upsrs import events as ev
from upsrs.eventclient import EventChannel, EventReport

DEMO_AE = "AIW_DEMO"
SIZES = {"full": dict(shape=(256, 256, 160), spacing=(1.0, 1.0, 1.0)),
         "small": dict(shape=(128, 128, 64), spacing=(1.5, 1.5, 2.0))}
PROCEDURE_CODE = ("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")


@dataclass
class Options:
    pacs: str | None = None
    redis_url: str | None = None
    size: str = "full"
    seed: int = 7
    keep_running: bool = False
    embedded: bool = False  # the embedded store even where redis-server is installed
    timeout: float = 300.0


@dataclass
class Stack:
    """What the demo started, to be stopped in reverse order."""

    tmp: Path
    site_url: str = ""
    pacs_url: str = ""
    redis_kind: str = ""
    queue_url: str = ""
    stops: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


def _start_redis(stack: Stack, options: Options) -> str | None:
    """The Redis URL to use, or None for the embedded store."""
    if options.redis_url:
        stack.redis_kind = f"redis at {options.redis_url}"
        return options.redis_url
    exe = shutil.which("redis-server")
    if exe is None or options.embedded:
        stack.redis_kind = "embedded store" + ("" if options.embedded else " (no redis-server installed)")
        return None
    import redis

    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(stack.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.stops.append(lambda: (proc.terminate(), proc.wait(10)))
    url = f"redis://127.0.0.1:{port}/0"
    _wait(lambda: redis.Redis.from_url(url).ping(), 15, "redis-server")
    stack.redis_kind = f"private redis-server on port {port}"
    return url


def _start_site(stack: Stack, redis_url: str | None, with_store: bool) -> None:
    import uvicorn

    from aiw.compose import create_site
    from ups_server.settings import ServerSettings

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    settings = ServerSettings(port=port, redis_url=redis_url, key_prefix=f"aiw-demo-{uuid.uuid4().hex[:8]}:",
                              public_url=url, log_file=str(stack.tmp / "aiw-demo.log"), lease_seconds=300)
    app = create_site(settings, stack.tmp / "dicomweb" if with_store else None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, name="aiw-site", daemon=True)
    thread.start()
    _wait(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, 30, "the Task Manager")

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    stack.stops.append(stop)
    stack.site_url = url


def _start_performer(stack: Stack, redis_url: str | None) -> None:
    from performers.agent import Agent
    from performers.settings import PerformerSettings
    from performers.worker import make_worker

    prefix = f"aiw-demo-{uuid.uuid4().hex[:8]}"
    stack.queue_url = redis_url or f"memory://{prefix}"
    env = {"AIW_UPS_URL": stack.site_url, "AIW_QUEUE_URL": stack.queue_url, "AIW_QUEUE_PREFIX": prefix,
           "AIW_WORK_DIR": str(stack.tmp / "work"), "AIW_AE_TITLE": "AIW_PERFORMER", "AIW_HEARTBEAT_SECONDS": "10",
           "AIW_CATCHUP_INTERVAL": "10"}
    (stack.tmp / "work").mkdir(exist_ok=True)
    os.environ.update(env)  # the job reads its settings from the environment, as in a real worker
    settings = PerformerSettings()

    loop = asyncio.new_event_loop()
    stop_event: asyncio.Event | None = None

    def agent_main() -> None:
        nonlocal stop_event
        asyncio.set_event_loop(loop)
        stop_event = asyncio.Event()
        loop.run_until_complete(Agent(settings).run(stop_event))

    agent = threading.Thread(target=agent_main, name="aiw-agent", daemon=True)
    agent.start()
    worker = make_worker(settings, f"demo-{prefix}", in_thread=True)
    wthread = threading.Thread(target=lambda: worker.work(logging_level="WARNING", with_scheduler=False),
                               name="aiw-worker", daemon=True)
    wthread.start()

    def stop() -> None:
        if stop_event is not None:
            loop.call_soon_threadsafe(stop_event.set)
        agent.join(10)
        # The worker thread (a daemon) ends with the process. It sits in a blocking
        # dequeue and would complain of Redis going away: not news to a demo that is
        # ending. (rq's request_stop would install signal handlers in our main thread.)
        quiet = logging.getLogger("aiw.demo.stopped-worker")
        quiet.disabled = True
        worker.log = quiet
        worker.unsubscribe()

    stack.stops.append(stop)


@contextlib.contextmanager
def services(options: Options) -> Iterator[Stack]:
    stack = Stack(Path(tempfile.mkdtemp(prefix="aiw-demo-")))
    try:
        redis_url = _start_redis(stack, options)
        _start_site(stack, redis_url, with_store=options.pacs is None)
        stack.pacs_url = options.pacs.rstrip("/") if options.pacs else f"{stack.site_url}/dicom-web"
        _start_performer(stack, redis_url)
        yield stack
    finally:
        stack.close()
        shutil.rmtree(stack.tmp, ignore_errors=True)


# ---------------------------------------------------------------------- the loop
class Follower:
    """A Watcher on the event channel: prints one workitem's events until it is final.
    The channel is opened and subscribed before the workitem is created (events are not
    queued for an AE that has no channel yet); events that arrive before the create's
    answer tells the UID are kept and shown once it is known."""

    def __init__(self, ups: UpsClient, console: Console):
        self.ups = ups
        self.console = console
        self.ready = asyncio.Event()
        self.uid: str | None = None
        self.final: str | None = None
        self._early: list[EventReport] = []

    async def run(self) -> str:
        async def on_connect() -> None:
            await self.ups.subscribe(DEMO_AE)  # global: the UID is not known before the create
            self.ready.set()

        channel = EventChannel(self.ups.channel_url(DEMO_AE), on_connect=on_connect)
        try:
            async for event in channel:
                if self.uid is None:
                    self._early.append(event)
                else:
                    self.show(event)
                if self.final:
                    return self.final
        finally:
            await channel.close()
        return self.final or "?"

    def know(self, uid: str) -> None:
        self.uid = uid
        for event in self._early:
            self.show(event)
        self._early.clear()

    def show(self, event: EventReport) -> None:
        if event.uid != self.uid or self.final:
            return
        if event.type == ev.STATE_REPORT:
            self.console.print(f"  [bold]state[/] {event.state}  (inputs {event.readiness})")
            if event.state in ("COMPLETED", "CANCELED"):
                self.final = str(event.state)
        elif event.type == ev.PROGRESS_REPORT:
            items = dj.items(event.dataset, 0x00741002)
            text = dj.first(items[0], 0x00741006, "") if items else ""
            self.console.print(f"  [cyan]{float(event.progress or 0):5.0f}%[/] {text}")
        else:
            self.console.print(f"  {event.name}")


def run(options: Options, console: Console | None = None) -> int:
    console = console or Console()
    if options.size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}")
    started = time.perf_counter()
    with services(options) as stack:
        console.rule("[bold]aiw demo[/] — IHE AIW-I, end to end")
        console.print(f"Task Manager (UPS-RS)  {stack.site_url}   [dim]{stack.redis_kind}[/]")
        console.print(f"PACS (DICOMweb)        {stack.pacs_url}"
                      + ("   [dim]built-in store[/]" if options.pacs is None else ""))
        console.print("Task Performer         agent + rq worker; model aiw-flair-lesions 1.0.0 (CPU, artificial intelligence)")
        console.print(f"Log                    {stack.tmp / 'aiw-demo.log'}")
        code = asyncio.run(_loop(stack, options, console))
        console.print(f"[dim]{time.perf_counter() - started:.1f} s in all[/]")
        if options.keep_running and code == 0:
            console.print("Services keep running; Ctrl+C stops them.")
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
    return code


async def _loop(stack: Stack, options: Options, console: Console) -> int:
    from performers import synthetic
    from performers.dicomweb import store_instances
    from requester_cli.builder import Parameter, Procedure, build, study_from_datasets

    size = SIZES[options.size]
    console.rule("1. A new MR study arrives in the PACS")
    t = time.perf_counter()
    current, prior = synthetic.make_pair(options.seed, **size)
    for study, what in ((prior, "prior"), (current, "current")):
        await asyncio.to_thread(store_instances, stack.pacs_url, study.flair.datasets, timeout=120, retries=2)
        mb = sum(len(ds.PixelData) for ds in study.flair.datasets) / 1e6
        console.print(f"  stored {what} study {study.study_date} of patient {study.patient_id}: "
                      f"{len(study.flair.datasets)} images ({mb:.0f} MB), {len(study.lesions)} lesions "
                      f"[dim](STOW-RS, {time.perf_counter() - t:.1f} s)[/]")
        t = time.perf_counter()

    console.rule("2. The Task Requester creates a workitem (RAD-80)")
    ref = study_from_datasets(current.flair.datasets, stack.pacs_url)
    prior_ref = study_from_datasets(prior.flair.datasets, stack.pacs_url)
    procedure = Procedure(PROCEDURE_CODE, "MS lesion follow-up", worklist_label="AI",
                          station=("AIW-NODE-1", "99AIW", "aiw reference performer"),
                          parameters=(Parameter(("min_lesion_mm3", "99AIW", "Minimum lesion volume"), 10.0,
                                                ("mm3", "UCUM", "cubic millimeter")),),
                          expected_minutes=5)
    doc = build(ref, procedure, ref.series, prior=prior_ref.series)
    async with UpsClient(stack.site_url) as ups:
        follower = Follower(ups, console)
        following = asyncio.create_task(follower.run())
        await asyncio.wait_for(follower.ready.wait(), 30)
        result = await ups.create(doc)
        follower.know(result.uid)
        console.print(f"  workitem {result.uid}\n  accession {current.accession}, patient {current.patient_id} "
                      f"(issuer {current.patient_id_issuer}), with the prior study as a second input")
        console.rule("3. The Task Performer claims it, runs the model and stores SEG + SR")
        final = await asyncio.wait_for(following, options.timeout)
        wi_doc = await ups.retrieve(result.uid)
    if final != "COMPLETED":
        items = dj.items(wi_doc, 0x00741002)
        console.print(f"[red]The workitem ended {final}:[/] {dj.first(items[0], 0x00741238, '') if items else ''}")
        return 1
    console.rule("4. Results")
    return await asyncio.to_thread(_show_results, stack, wi_doc, current, prior, console)


def _show_results(stack: Stack, doc: dict[str, Any], current: Any, prior: Any, console: Console) -> int:
    import highdicom as hd
    import numpy as np
    import pydicom

    from performers import synthetic
    from performers.dicomweb import retrieve_series
    from performers.volumes import load_series

    (performed,) = dj.items(doc, 0x00741216)
    objects: dict[str, pydicom.Dataset] = {}
    listing = Table("Output Information Sequence (WADO-RS)", "objects", box=None)
    for n, item in enumerate(dj.items(performed, 0x00404033)):
        urls = [dj.first(r, 0x00081190) for r in dj.items(item, 0x0040E025)]
        files = retrieve_series(urls[0], stack.tmp / "results" / str(n), timeout=60, retries=2)
        for path in files:
            ds = pydicom.dcmread(path)
            objects[ds.Modality] = ds
        listing.add_row(urls[0], ", ".join(sorted({pydicom.dcmread(p, stop_before_pixels=True).Modality
                                                   for p in files})))
    console.print(listing)

    sr = objects.get("SR")
    if sr is None:
        console.print("[red]no SR among the outputs[/]")
        return 1
    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    report = hd.sr.srread(buf).content
    table = Table(title=f"SR findings ({sr.ContentDate}, {sr.CompletionFlag}/{sr.VerificationFlag}: "
                        "preliminary until a radiologist verifies it)")
    table.add_column("finding")
    table.add_column("measurement", justify="right")
    for group in report.get_volumetric_roi_measurement_groups():
        for m in group.get_measurements():
            table.add_row(str(group.tracking_identifier), f"{float(m.value):.0f} {m.unit.value}")
    for group in report.get_image_measurement_groups():
        for m in group.get_measurements():
            table.add_row(str(m.name.meaning), f"{float(m.value):+g} {m.unit.value}"
                          if "Change" in str(m.name.meaning) else f"{float(m.value):g} {m.unit.value}")
        for q in group.get_qualitative_evaluations():
            if q.name.value in ("111000", "111001"):  # Algorithm Family/Name: shown in the header
                continue
            table.add_row(str(q.name.meaning), str(q.value.meaning))
    console.print(table)
    console.print(f"  truth from the generator: {len(current.lesions)} lesions now, {len(prior.lesions)} in the prior")

    seg = objects.get("SEG")
    if seg is not None:
        buf = io.BytesIO()
        seg.save_as(buf, enforce_file_format=True)
        buf.seek(0)
        volume, _ = load_series(current.flair.datasets)
        found = hd.seg.segread(buf).get_volume(combine_segments=True).match_geometry(volume).array > 0
        truth = synthetic.truth_labels(current, volume) > 0
        dice = 2.0 * float((found & truth).sum()) / float(found.sum() + truth.sum())
        console.print(f"  SEG against the generator's ground truth: Dice {dice:.3f} "
                      f"({int(np.count_nonzero(found))} voxels segmented)")

    stored = httpx.get(f"{stack.pacs_url}/studies/{current.study_uid}/series",
                       headers={"accept": "application/dicom+json"}, timeout=30)
    series = Table(title=f"Study {current.study_uid} in the PACS (QIDO-RS)")
    for col in ("modality", "series", "description", "instances"):
        series.add_column(col)
    for item in stored.json() if stored.status_code == 200 else []:
        series.add_row(str(dj.first(item, 0x00080060, "")), str(dj.first(item, 0x00200011, "")),
                       str(dj.first(item, 0x0008103E, "")), str(dj.first(item, 0x00201209, "")))
    console.print(series)

    if shutil.which("dciodvfy"):
        from performers.dciodvfy import validate

        for modality, ds in sorted(objects.items()):
            rep = validate(ds)
            console.print(f"  dciodvfy {modality}: {len(rep.errors)} errors, {len(rep.warnings)} warnings")
    return 0
