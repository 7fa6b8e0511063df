"""Handing freed memory back to the system after large replies.

A search without a limit on a large store answers with megabytes: a one-day range at 100k
workitems is 559 results, 2.1 MiB, and Redis sends it as 559 values of ~4 KiB. With a few
dozen such searches in flight, glibc's heap grows by tens of MiB of those small blocks;
when they are freed, the heap keeps them (pages in its middle are only returned by
``malloc_trim``), so the server's resident size stays at the burst's high-water mark —
measured in-process at 20k workitems: +12 MiB after 320 such searches, back to +0.5 MiB
after one ``malloc_trim(0)``, which took 1.5 ms. That is the growth that made the
server's RSS depend on the store's size (docs/benchmarks.md, Memory).

So a reply of at least ``LARGE_REPLY`` bytes schedules one ``malloc_trim(0)`` shortly
after (``DELAY``: when the reply's buffers are gone; further large replies meanwhile join
the same trim): at most five trims a second, ~1% of a core while large replies keep
coming, nothing otherwise. Where the C library has no ``malloc_trim`` (musl, macOS),
nothing happens.

The opposite churn is glibc's own, and it costs CPU: by default the heap is shrunk
whenever 128 KiB or more are free at its top (the threshold then moves with the largest
block freed), and blocks above a moving threshold get a fresh ``mmap`` each. A page of 50
projections is ~190 KiB in each of several buffers (the Redis reply, the joined body),
so with a few dozen searches in flight the heap grew and shrank with every request:
~35 page faults per search of 50 — 490,000 in 4 s, every page zeroed anew by the kernel —
and a third fewer searches a second than with the thresholds fixed
(docs/benchmarks.md, "Sixth round"). ``keep_heap`` fixes them for a server: blocks up to
``MMAP_THRESHOLD`` come from the heap, and up to ``TRIM_THRESHOLD`` free at its top stays
there for the next request; what a burst of large replies leaves is the trimmer's above.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from typing import Callable

LARGE_REPLY = 256 << 10  # bytes: above a page of 50 default projections (~190 KiB)
DELAY = 0.2  # seconds
MMAP_THRESHOLD = 4 << 20  # bytes: a block this large or larger gets its own mmap
TRIM_THRESHOLD = 16 << 20  # bytes free at the heap's top before glibc shrinks it itself
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc malloc.h)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once for ``mallopt`` and ``malloc_trim``."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except OSError:
        return None


def keep_heap() -> bool:
    """Fix glibc's trim and mmap thresholds for a long-running server (see above); False
    where the C library has no ``mallopt`` (musl, macOS) or refuses."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _find_malloc_trim() -> Callable[[int], int] | None:
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class Trimmer:
    """``note(n)`` after sending a reply of ``n`` bytes; trims at most once per ``delay``."""

    def __init__(self, trim: Callable[[int], int] | None = None, large: int = LARGE_REPLY, delay: float = DELAY):
        self.trim = trim if trim is not None else _find_malloc_trim()
        self.large = large
        self.delay = delay
        self.pending = False
        self.trims = 0

    def note(self, size: int) -> None:
        if size < self.large or self.pending or self.trim is None:
            return
        self.pending = True
        asyncio.get_running_loop().call_later(self.delay, self._run)

    def _run(self) -> None:
        self.pending = False
        self.trims += 1
        self.trim(0)  # type: ignore[misc]


trimmer = Trimmer()
