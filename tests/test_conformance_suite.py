"""The portable conformance suite (conformance/) passes against aiw on a real redis-server.

It runs as its own pytest process against the server's URL, exactly as another vendor
would run it with ``aiw conformance --url URL``.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers import REPO


def test_conformance_suite_passes_against_aiw(redis_server_url: str) -> None:
    env = {**os.environ, "AIW_CONFORMANCE_URL": redis_server_url}
    run = subprocess.run([sys.executable, "-m", "aiw.cli", "conformance", "--url", redis_server_url, "-q"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, f"conformance suite failed:\n{tail}\n{run.stderr[-2000:]}"
    assert " passed" in tail and " failed" not in tail
