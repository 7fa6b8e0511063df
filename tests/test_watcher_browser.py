"""The web console in a real browser (Debian chromium, headless, driven by Playwright):
workitems created through the Task Manager appear on the page, and their state changes
show within seconds, with no reload. Screenshots go to the test's tmp dir, and to
docs/screenshots/ when those are missing (or AIW_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.factory import performed, progress, sq, state, v, workitem
from tests.servers import REPO, RedisProcess, free_port, start_server, wait_until
from upsrs.uids import new_uid

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium is not installed "
                                                                    "(apt-get install chromium)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = REPO / "docs" / "screenshots"
FAST = {"AIW_HEARTBEAT_INTERVAL": "0.5", "AIW_HEARTBEAT_TIMEOUT": "0.5"}


@pytest.fixture
def console(redis_proc: RedisProcess, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(Task Manager URL, watcher web console URL): both as the processes users run."""
    srv = start_server(redis_proc.url, extra_env=FAST)
    port = free_port()
    cfg = tmp_path / "watch.toml"
    cfg.write_text('[watch]\nviewer_url_template = "http://viewer.example/viewer?StudyInstanceUIDs={study_uid}"\n'
                   'stuck_minutes = 0.02\n[watch.cancel_tokens]\n"tok-qa" = "qa lead"\n'
                   '[watch.time_budget_seconds]\n"Stroke triage" = 1\n')
    env = {**os.environ, "AIW_WATCH_HEARTBEAT_INTERVAL": "0.5", "AIW_WATCH_HEARTBEAT_TIMEOUT": "0.5",
           "AIW_WATCH_PUSH_INTERVAL": "0.05"}
    log = open(tmp_path / "watcher.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "aiw.cli", "watch", "--server", srv.url, "--web", "--port", str(port),
                             "--config", str(cfg)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/api/status", timeout=1).json()["loaded"], what="aiw watch --web")
        yield srv.url, url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        srv.stop()


def shoot(page, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    page.screenshot(path=str(tmp_path / name), full_page=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    if os.environ.get("AIW_UPDATE_SCREENSHOTS") == "1" or not (DOCS / name).exists():
        shutil.copy(tmp_path / name, DOCS / name)


def test_page_shows_workitems_and_their_state_changes_live(console: tuple[str, str], tmp_path: Path) -> None:
    tm, url = console
    h = httpx.Client(base_url=tm, headers={"content-type": "application/dicom+json"}, timeout=10)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url)
        page.wait_for_selector("#conn[data-state=connected]", timeout=10_000)

        def row(uid: str):  # type: ignore[no-untyped-def]
            return page.locator(f'#worklist tr[data-uid="{uid}"]')

        uids = []
        for i, (label, prio) in enumerate([("MS lesion detection", "MEDIUM"), ("Stroke triage", "HIGH"),
                                            ("MS lesion detection", "LOW")]):
            r = h.post("/workitems", content=json.dumps(workitem(accession=f"ACC-B{i}", label=label, priority=prio,
                                                                   patient_name=f"PATIENT^NUMBER{i}")))
            assert r.status_code == 201
            uids.append(r.headers["location"].rsplit("/", 1)[1])
        for uid in uids:
            playwright_api.expect(row(uid).locator("td.state")).to_have_text("SCHEDULED", timeout=5_000)
        # newest first
        assert page.locator("#worklist tbody tr").first.get_attribute("data-uid") == uids[-1]
        assert "PATIENT, NUMBER1" in row(uids[1]).inner_text()

        tuid = new_uid()
        assert h.put(f"/workitems/{uids[0]}/state", content=json.dumps(state("IN PROGRESS", tuid))).status_code == 200
        playwright_api.expect(row(uids[0]).locator("td.state")).to_have_text("IN PROGRESS", timeout=5_000)
        h.post(f"/workitems/{uids[0]}?transaction-uid={tuid}", content=json.dumps(progress(55, "segmenting")))
        playwright_api.expect(row(uids[0]).locator("td.progress")).to_contain_text("55%", timeout=5_000)
        study = workitem()["0020000D"]["Value"][0]
        out = {"0040E020": v("CS", "DICOM"), "0020000D": v("UI", study), "0020000E": v("UI", new_uid()),
               "00081199": sq({"00081150": v("UI", "1.2.840.10008.5.1.4.1.1.88.22"), "00081155": v("UI", new_uid())}),
               "0040E025": sq({"00081190": v("UR", f"http://pacs/dicom-web/studies/{study}")})}
        r = h.post(f"/workitems/{uids[0]}?transaction-uid={tuid}", content=json.dumps(performed(outputs=[out])))
        assert r.status_code == 200, r.headers.get("warning")
        assert h.put(f"/workitems/{uids[0]}/state", content=json.dumps(state("COMPLETED", tuid))).status_code == 200
        playwright_api.expect(row(uids[0]).locator("td.state")).to_have_text("COMPLETED", timeout=5_000)
        # a HIGH item past its (1 s) budget and a stuck one show in the attention views
        t2 = new_uid()
        h.put(f"/workitems/{uids[2]}/state", content=json.dumps(state("IN PROGRESS", t2)))
        playwright_api.expect(page.locator("#late li")).to_contain_text("Stroke triage", timeout=5_000)
        playwright_api.expect(page.locator("#stuck li")).to_contain_text("no progress", timeout=5_000)
        # filters: state, then free text
        page.select_option("select[name=state]", "COMPLETED")
        playwright_api.expect(page.locator("#worklist tbody tr")).to_have_count(1)
        page.select_option("select[name=state]", "")
        page.fill("input[name=q]", "number1")
        playwright_api.expect(page.locator("#worklist tbody tr")).to_have_count(1)
        page.fill("input[name=q]", "")
        shoot(page, tmp_path, "watcher-console.png")

        # the workitem page: timeline, preliminary results, viewer link, cancel action
        row(uids[0]).locator("a").click()
        playwright_api.expect(page.locator("#state")).to_have_text("COMPLETED", timeout=5_000)
        playwright_api.expect(page.locator(".preliminary")).to_contain_text("PRELIMINARY")
        assert page.locator("#viewer").get_attribute("href") == f"http://viewer.example/viewer?StudyInstanceUIDs={study}"
        playwright_api.expect(page.locator("#timeline")).to_contain_text("Deletion lock released", timeout=5_000)
        assert "Progress 55% — segmenting" in page.locator("#timeline").inner_text()
        shoot(page, tmp_path, "watcher-workitem.png")

        page.goto(f"{url}/workitems/{uids[2]}")
        playwright_api.expect(page.locator("#state")).to_have_text("IN PROGRESS", timeout=5_000)
        page.fill("#cancel-form input[name=reason]", "wrong study")
        page.fill("#cancel-form input[name=token]", "tok-qa")
        page.click("#cancel-form button")
        playwright_api.expect(page.locator("#cancel-result")).to_have_text("Cancellation requested by qa lead.")
        playwright_api.expect(page.locator("#facts")).to_contain_text("wrong study", timeout=5_000)

        page.goto(f"{url}/stats")
        playwright_api.expect(page.locator("#turnaround")).to_contain_text("MS lesion detection", timeout=5_000)
        assert page.locator("svg.chart").count() >= 3
        shoot(page, tmp_path, "watcher-stats.png")
        browser.close()
