"""Watcher web console under load: ``python -m bench.watcher`` prints a Markdown section.

Set-up: redis-server + ``aiw server`` + ``aiw watch --web`` (each its own process) + headless
Debian chromium (Playwright). 10,000 workitems exist before the page opens (a third of
them IN PROGRESS). Measured:

* page load: navigation start to the snapshot of all rows rendered (``window.aiw.loaded``);
* state change -> page: while background Progress Reports keep the event rate at
  ~100 events/s, probe workitems are claimed one by one; the time from just before the
  claim request to the moment the row in the page's DOM shows IN PROGRESS (a
  MutationObserver in the page; Python's and the browser's clocks are the same clock).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from tests.factory import progress, workitem
from tests.servers import REPO, free_port, start_redis, start_server, wait_until
from upsrs.client import Conflict, UpsClient
from upsrs.uids import new_uid

N_ITEMS = int(os.environ.get("AIW_BENCH_WATCH_ITEMS", "10000"))
RATE = float(os.environ.get("AIW_BENCH_WATCH_RATE", "100"))
SECONDS = float(os.environ.get("AIW_BENCH_WATCH_SECONDS", "20"))
PROBES_PER_S = 4.0
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OBSERVER = """() => {
  window.__want = {}; window.__shown = {};
  new MutationObserver(() => {
    for (const uid of Object.keys(window.__want)) {
      if (document.querySelector(`#worklist tr[data-uid="${uid}"][data-state="IN PROGRESS"]`)) {
        window.__shown[uid] = Date.now(); delete window.__want[uid];
      }
    }
  }).observe(document.querySelector('#worklist tbody'), {childList: true, subtree: true});
}"""


async def populate(url: str, n: int) -> tuple[list[tuple[str, str]], list[str]]:
    """n workitems, a third claimed; returns (uid, tuid) of the claimed ones and the probes."""
    rng = random.Random(7)
    claimed: list[tuple[str, str]] = []
    async with UpsClient(url) as ups:
        sem = asyncio.Semaphore(16)

        async def retried(make: Any) -> Any:
            """A dropped keep-alive connection on a busy machine is no reason to abort the run;
            UIDs are chosen here, so a repeat that finds its work done (409) is success."""
            for attempt in range(5):
                try:
                    return await make()
                except httpx.TransportError:
                    await asyncio.sleep(0.2 * (attempt + 1))
                except Conflict:
                    return None
            return await make()

        async def one(i: int) -> None:
            async with sem:
                uid, tuid = new_uid(), new_uid()
                ds = workitem(accession=f"B{i:07d}", patient_name=f"BENCH^{i}", priority=rng.choice(["LOW", "MEDIUM", "HIGH"]))
                await retried(lambda: ups.create(ds, uid=uid))
                if i % 3 == 0:
                    await retried(lambda: ups.claim(uid, tuid))
                    claimed.append((uid, tuid))

        await asyncio.gather(*(one(i) for i in range(n)))
        probes = [(await ups.create(workitem(accession=f"P{i:07d}"))).uid for i in range(int(SECONDS * PROBES_PER_S) + 5)]
    return claimed, probes


async def drive(url: str, claimed: list[tuple[str, str]], probes: list[str], page: Any) -> tuple[list[float], int]:
    """Background Progress Reports + probe claims at RATE events/s for SECONDS."""
    sent: dict[str, float] = {}
    events = 0
    async with UpsClient(url) as ups:
        t_end = time.monotonic() + SECONDS
        interval = 1.0 / RATE
        next_at = time.monotonic()
        probe_every = int(RATE / PROBES_PER_S)
        k = 0
        inflight: set[asyncio.Task] = set()
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now < next_at:
                await asyncio.sleep(next_at - now)
            next_at += interval
            k += 1
            if k % probe_every == 0 and probes:
                uid = probes.pop()
                await page.evaluate(f"() => {{ window.__want['{uid}'] = 1; }}")
                sent[uid] = time.time()
                task = asyncio.create_task(ups.claim(uid))
            else:
                uid, tuid = claimed[k % len(claimed)]
                task = asyncio.create_task(ups.update(uid, progress(k % 100, f"step {k}"), tuid))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            events += 1
        await asyncio.gather(*inflight, return_exceptions=True)
    await asyncio.sleep(3)
    shown = await page.evaluate("() => window.__shown")
    lat = [(shown[u] / 1000 - t0) * 1000 for u, t0 in sent.items() if u in shown]
    missing = len(sent) - len(lat)
    return lat, missing


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))]


async def main() -> None:
    from playwright.async_api import async_playwright

    redis = start_redis()
    srv = start_server(redis.url)
    port = free_port()
    watcher = None
    try:
        t0 = time.monotonic()
        claimed, probes = await populate(srv.url, N_ITEMS)
        populate_s = time.monotonic() - t0
        watcher = subprocess.Popen([sys.executable, "-m", "aiw.cli", "watch", "--server", srv.url, "--web", "--port",
                                    str(port)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        web = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        total = N_ITEMS + len(probes)
        wait_until(lambda: httpx.get(f"{web}/api/status", timeout=2).json()["rows"] >= total, timeout=120,
                   what="watcher model loaded")
        model_load_s = time.monotonic() - t0
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            loads = []
            for _ in range(3):
                page = await browser.new_page(viewport={"width": 1400, "height": 900})
                start = time.time()
                await page.goto(web)
                await page.wait_for_function("() => window.aiw && window.aiw.loaded", timeout=60_000)
                loads.append((await page.evaluate("() => window.aiw.loaded")) / 1000 - start)
                await page.close()
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(web)
            await page.wait_for_function("() => window.aiw && window.aiw.loaded", timeout=60_000)
            await page.evaluate(OBSERVER)
            lat, missing = await drive(srv.url, claimed, probes, page)
            rows = await page.evaluate("() => document.querySelectorAll('#worklist tbody tr').length")
            await browser.close()
        print("## Watcher web console (10,000 workitems, 100 events/s)\n")
        print(f"Set-up: redis-server, `aiw server`, `aiw watch --web`, headless Debian chromium (Playwright), "
              f"all on this machine ({os.cpu_count()} CPUs). {N_ITEMS} workitems created beforehand "
              f"({populate_s:.0f} s), a third IN PROGRESS; the watcher's initial load (subscribe with lock + "
              f"search) took {model_load_s:.1f} s. Load: {RATE:.0f} events/s for {SECONDS:.0f} s (Progress Reports on "
              f"IN PROGRESS workitems) with {PROBES_PER_S:.0f} probe claims/s among them.\n")
        print("| Measure | p50 | p95 | max | n |")
        print("|---|---|---|---|---|")
        print(f"| Page load, {N_ITEMS + len(probes)} rows in the model (navigation → all rows rendered) | "
              f"{statistics.median(loads) * 1000:.0f} ms | — | {max(loads) * 1000:.0f} ms | {len(loads)} |")
        if lat:
            print(f"| State change → row shows it in the page (claim request sent → DOM updated) | "
                  f"{statistics.median(lat):.0f} ms | {pct(lat, 95):.0f} ms | {max(lat):.0f} ms | {len(lat)} |")
        print(f"\nProbes never shown: {missing}. Rows in the DOM: {rows} (the newest 200 matching; the model holds "
              f"all). Pushes are batched every 100 ms (`push_interval`), which bounds the median from below.")
    finally:
        if watcher:
            watcher.terminate()
            watcher.wait(10)
        srv.stop()
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
