"""Real processes for the tests: redis-server on a free port, ``aiw server`` over it.

Never the shared Redis on 6379: every test session starts its own, with nothing on disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 15.0, what: str = "service") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up in {timeout}s: {last}")


@dataclass
class RedisProcess:
    port: int
    proc: subprocess.Popen
    dir: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis(*args: str) -> RedisProcess:
    """``args``: more redis-server options (e.g. ``--rename-command SORT_RO ""``: a Redis
    without a command)."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    d = tempfile.mkdtemp(prefix="aiw-redis-")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", d, "--daemonize", "no", "--loglevel", "warning", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = RedisProcess(port, proc, d)
    wait_until(lambda: redis.Redis(port=port).ping(), what=f"redis-server :{port}")
    return r


@dataclass
class ServerProcess:
    port: int
    proc: subprocess.Popen
    redis_url: str | None
    env: dict[str, str] = field(default_factory=dict)
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(redis_url: str | None, *, port: int | None = None, prefix: str | None = None,
                 extra_env: dict[str, str] | None = None, log_dir: Path | None = None) -> ServerProcess:
    """``aiw server`` as its own process (what users run); ``redis_url`` None = embedded."""
    port = port or free_port()
    env = {**os.environ, "AIW_KEY_PREFIX": prefix or f"t{port}:", "AIW_LOG_JSON": "true", **(extra_env or {})}
    if redis_url:
        env["AIW_REDIS_URL"] = redis_url
    else:
        env.pop("AIW_REDIS_URL", None)
    log = (log_dir or Path(tempfile.gettempdir())) / f"aiw-server-{port}.log"
    out = open(log, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "aiw.cli", "server", "--port", str(port)],
                            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    srv = ServerProcess(port, proc, redis_url, env, log)
    wait_healthy(proc, srv.url, f"aiw server :{port}", log)
    return srv


def wait_healthy(proc: subprocess.Popen, url: str, what: str, log: Path) -> None:
    """Until ``url``/healthz answers 200; a process that exits first is an error."""

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; see {log}")
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

    wait_until(up, what=what)


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid`` at any depth, from /proc (rq's work horses run in process
    groups of their own, so killing a worker's group does not reach them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
