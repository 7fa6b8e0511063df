"""``aiw server`` tunes the cycle collector once started (``ups_server.gctune``)."""

from __future__ import annotations

import gc

from ups_server import gctune


def test_tune_for_serving_freezes_startup_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gctune.tune_for_serving()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gctune.YOUNG_THRESHOLD, before[1], before[2])
        made = [[] for _ in range(3)]
        made[0].append(made)  # a cycle made after startup is still collected
        del made
        assert gc.collect() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
