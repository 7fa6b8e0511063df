"""Garbage-collector settings for the long-running Task Manager process.

CPython's cycle collector passes over the young generation whenever container
allocations outnumber deallocations by 700. A claim or an update decodes the stored
workitem (about 150 dicts and lists) and holds it across two Redis round trips, so with
a few dozen requests in flight that count is crossed every few requests, although
reference counting frees nearly all of it moments later. Each pass moves the survivors
of that moment to an older generation, and every so often a full collection walks the
whole heap — pydicom's data dictionary, the UPS tables, the app. Measured in-process
(ASGI app called directly, 8 concurrent callers): 10–40 µs of every claim and update,
about 8% of each; creates and searches hardly trigger it.

So once the server has started, everything that exists is frozen (``gc.freeze``: never
traversed again; it lives as long as the process anyway) and the young generation is
collected every 10,000 net allocations instead of 700. Cyclic garbage, which the request
path seldom makes (an exception and its traceback), is still collected, a little later.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_for_serving() -> None:
    """Freeze what startup built and collect the young generation less often (see the
    module's docstring). Called once by ``aiw server`` after startup; a library user
    embedding ``create_app`` keeps its own process's settings."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
