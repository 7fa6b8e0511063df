"""``aiw demo``, as a user runs it: one command, the whole loop, findings on the screen."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.orthanc import orthanc_available, start_orthanc
from tests.servers import REPO


def demo(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "aiw.cli", "demo", "--size", "small", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={"COLUMNS": "160", **_env()})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AIW_")}


def check(out: str) -> None:
    assert "state IN PROGRESS" in out and "state COMPLETED" in out
    assert "Running the model" in out
    assert re.search(r"Number of lesions\s+│\s+5 \{lesions\}", out), out
    assert re.search(r"Change in number of lesions since prior\s+│\s+\+2 \{lesions\}", out), out
    dice = float(re.search(r"Dice (\d\.\d+)", out).group(1))
    assert dice >= 0.9
    assert re.search(r"│ SEG\s+│ 901", out) and re.search(r"│ SR\s+│ 902", out)
    if "dciodvfy" in out:
        assert "dciodvfy SEG: 0 errors" in out and "dciodvfy SR: 0 errors" in out


@pytest.mark.redis
def test_demo_with_a_private_redis_server() -> None:
    out = demo()
    assert "private redis-server" in out
    check(out)


def test_demo_on_the_embedded_store() -> None:
    out = demo("--embedded")
    assert "embedded store" in out
    check(out)


@pytest.mark.skipif(not orthanc_available(), reason="needs Debian packages orthanc, orthanc-dicomweb")
def test_demo_with_a_real_pacs(tmp_path: Path) -> None:
    pacs = start_orthanc(tmp_path / "orthanc")
    try:
        out = demo("--pacs", pacs.dicomweb_url)
        assert pacs.dicomweb_url in out
        check(out)
    finally:
        pacs.stop()
