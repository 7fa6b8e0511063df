"""The worker's warm-up before rq forks (performers.warmup): it really runs the data
path, freezes the collector, and never stops a worker when it fails. Its effect on job
time is measured by bench/performer.py, not here."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

from performers import warmup
from tests.servers import REPO


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


@pytest.mark.parametrize("segmentation_type", ["BINARY", "LABELMAP"])
def test_warm_runs_the_data_path_and_freezes_the_collector(unfrozen, segmentation_type: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import performers.results as results

    encoded = []
    real = results.encode

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        encoded.append((kwargs["segmentation_type"], kwargs["prior_source"] is not None, out))
        return out

    monkeypatch.setattr(results, "encode", spy)
    gc.unfreeze()
    assert warmup.warm(segmentation_type) > 0
    assert gc.get_freeze_count() > 0
    # with and without a prior, each with lesions found (a SEG) and a report
    assert [(t, p) for t, p, _ in encoded] == [(segmentation_type, True), (segmentation_type, False)]
    for _, _, out in encoded:
        assert out.seg is not None and out.seg.SegmentationType == segmentation_type
        assert out.sr is not None and len(out.seg.SegmentSequence) >= 1


def test_a_failing_warm_up_is_logged_not_raised(unfrozen, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(segmentation_type: str) -> None:
        raise RuntimeError("no scratch space")

    monkeypatch.setattr(warmup, "_exercise", broken)
    gc.unfreeze()
    assert warmup.warm() == 0.0
    assert gc.get_freeze_count() == 0


def test_the_worker_warms_before_forking_and_not_for_in_memory_queues() -> None:
    # in a subprocess: warming for real would freeze this process's collector
    code = ("import types, performers.warmup as w, performers.worker as k; from performers.settings import "
            "PerformerSettings as S; calls = []; w.warm = lambda t: calls.append(t) or 1.0; "
            "k.make_worker = lambda s, name=None: types.SimpleNamespace(work=lambda **kw: True); "
            "k.run_worker(S(segmentation_type='LABELMAP', queue_url='redis://127.0.0.1:1/0')); "
            "k.run_worker(S(queue_url='memory://')); print(calls)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['LABELMAP']"
