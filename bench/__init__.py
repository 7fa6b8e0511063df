"""Benchmarks of the aiw Task Manager (``python -m bench``; see docs/benchmarks.md).

Every process is our own: a redis-server on a free port (never the shared one on 6379),
``aiw server`` over it as users run it, the bare ceiling app, and the client processes.
The machine is small and shared, so targets are ratios and percentiles measured side by
side in one run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


from tests.servers import REPO, RedisProcess, ServerProcess, free_port, start_redis, start_server, wait_healthy

# Production logging: JSON lines at info, one per request, to a file (start_server points
# the server's stdout there).
SERVER_ENV = {"AIW_LOG_JSON": "true", "AIW_LOG_LEVEL": "info"}


@dataclass
class BareProcess:
    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_bare(redis_url: str, log_dir: Path) -> BareProcess:
    port = free_port()
    out = open(log_dir / f"bare-{port}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "bench.bare_app", "--port", str(port), "--redis-url", redis_url],
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    b = BareProcess(port, proc)
    wait_healthy(proc, b.url, f"bare app :{port}", log_dir)
    return b


@dataclass
class Env:
    """Our own redis-server, one ``aiw server`` over it, optionally the bare app."""

    redis: RedisProcess
    server: ServerProcess
    log_dir: Path
    bare: BareProcess | None = None
    extra: list[Any] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.server.env["AIW_KEY_PREFIX"]

    def stop(self) -> None:
        for p in (self.server, self.bare, *self.extra):
            if p is not None:
                p.stop()
        self.redis.stop()
        if not os.environ.get("AIW_BENCH_KEEP_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def server_errors(self) -> int:
        """5xx responses the server logged (each is a bug)."""
        n = 0
        if self.server.log and self.server.log.exists():
            with open(self.server.log, "rb") as f:
                for line in f:
                    if b'"status":5' in line:
                        n += 1
        return n

    def server_log_bytes(self) -> int:
        return self.server.log.stat().st_size if self.server.log and self.server.log.exists() else 0


def start_env(with_bare: bool = False, log_dir: Path | None = None) -> Env:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="aiw-bench-"))
    r = start_redis()
    try:
        srv = start_server(r.url, extra_env=SERVER_ENV, log_dir=log_dir)
        bare = start_bare(r.url, log_dir) if with_bare else None
    except Exception:
        r.stop()
        raise
    return Env(r, srv, log_dir, bare)


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (/proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def machine() -> dict[str, Any]:
    cpuinfo: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            cpuinfo.setdefault(k.strip(), v.strip())
    model = f"{cpuinfo.get('model name', '?')} (family {cpuinfo.get('cpu family', '?')}, model {cpuinfo.get('model', '?')})"
    if "hypervisor" in cpuinfo.get("flags", "").split():
        model += ", virtual machine"
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    redis_v = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True,
                             text=True, check=False).stdout.strip()
    import hiredis
    import redis
    import starlette
    import uvicorn

    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools

        http = f"httptools {httptools.__version__}"
    except ImportError:
        http = "h11"
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                         check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                           text=True, check=False).stdout.strip()
    return {
        "git": git + (" (+ uncommitted changes)" if dirty else ""),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem": mem,
        "loadavg_at_start": [round(x, 2) for x in load],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "stack": f"uvicorn {uvicorn.__version__}, starlette {starlette.__version__}, {loop}, {http}, "
                 f"redis-py {redis.__version__} + hiredis {hiredis.__version__}",
        "redis": redis_v.split(" sha=")[0],
    }


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def now() -> float:
    return time.monotonic()
