"""``ups_server.memtrim``: a large reply hands the heap back once, shortly after; small
replies never do; on glibc the trim really returns freed memory to the system, and
``keep_heap`` stops the heap from shrinking and regrowing with every burst of replies."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from ups_server import memtrim


def test_large_replies_trim_once_shortly_after_and_small_ones_never() -> None:
    calls: list[int] = []

    async def run() -> None:
        t = memtrim.Trimmer(trim=lambda pad: calls.append(pad) or 1, large=1000, delay=0.05)
        t.note(999)
        await asyncio.sleep(0.1)
        assert calls == []  # below the threshold
        t.note(1000)
        t.note(50_000)  # joins the trim already scheduled
        assert calls == []  # not while the reply may still be in flight
        await asyncio.sleep(0.1)
        assert calls == [0] and t.trims == 1
        t.note(1000)
        await asyncio.sleep(0.1)
        assert calls == [0, 0]

    asyncio.run(run())


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not sys.platform.startswith("linux") or memtrim._find_malloc_trim() is None,
                    reason="glibc's malloc_trim")
def test_the_trim_returns_freed_heap_to_the_system() -> None:
    """What a burst of large search replies leaves: many freed ~4 KiB blocks between live
    ones, which glibc keeps until trimmed."""
    blocks = [bytes(4000) + i.to_bytes(4, "little") for i in range(20_000)]  # ~78 MiB
    keep = blocks[::50]  # live blocks among the freed ones, up to the top of the heap
    del blocks
    freed = _rss_kib()
    memtrim._find_malloc_trim()(0)  # type: ignore[misc]
    after = _rss_kib()
    assert freed - after > 40_000, (freed, after)  # KiB
    del keep


_CHURN = """
import resource, sys
from ups_server.memtrim import keep_heap
if sys.argv[1] == "keep":
    assert keep_heap()
def burst():  # what 32 searches of 50 in flight allocate and free: ~190 KiB each
    blocks = [bytes(190_000 + i) for i in range(32)]
    del blocks
for _ in range(20):
    burst()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    burst()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 100)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or memtrim._find_malloc_trim() is None,
                    reason="glibc's mallopt")
def test_keep_heap_ends_the_page_faults_of_large_reply_bursts() -> None:
    """By default every ~190 KiB block is a fresh mmap, its pages faulted in and zeroed
    anew; with ``keep_heap`` (``aiw server`` calls it) the heap serves them again."""
    def faults(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parents[1])
        return float(out.stdout)

    assert faults("default") > 500  # per burst: 32 blocks of 47 pages
    assert faults("keep") < 5
