"""Warm the data path once in the worker before rq forks its work horses.

A work horse is a fresh fork of the worker for every job, so whatever pydicom, highdicom
and numpy build lazily on first use is built again, and thrown away, by every job unless
the parent built it first. The largest of these is highdicom's standard tables (IODs,
modules, attributes: JSON parsed on first use, ~0.4 s), then pydicom's compiled
regular expressions and dictionaries; together they made a cold job's encode stage
~0.5 s slower than a warm one's (``bench/performer.py``: encode 0.93 s cold, ~0.3 s
warm, 256×256×160). So :func:`warm` runs one tiny job's data path in memory — read
Part 10 files, build the volume, run the reference model, encode SEG + SR with and
without a prior, serialise them — and then freezes the garbage collector's view of
everything that now exists: a horse's collections then never walk (and so never copy,
page by page) the parent's objects, which otherwise cost the volume stage ~0.08 s.

Warming is best effort: a failure is logged and the worker serves jobs cold.
"""

from __future__ import annotations

import gc
import io
import tempfile
import time
from pathlib import Path

import pydicom
import structlog

log = structlog.get_logger("aiw.performer")

# Small enough for the whole warm-up to take about a second at worker start, large enough
# for the reference model to find lesions (so the SEG and the per-lesion SR groups are
# built, not just an empty report).
SHAPE = (64, 64, 16)
SPACING = (3.0, 3.0, 6.0)


def _exercise(segmentation_type: str) -> None:
    from performers import synthetic
    from performers.models.base import ModelInput
    from performers.models.lesions import LesionModel
    from performers.results import Algorithm, encode
    from performers.volumes import load_series

    current, prior = synthetic.make_pair(0, shape=SHAPE, spacing=SPACING)
    with tempfile.TemporaryDirectory(prefix="aiw-warmup-") as tmp:
        loaded = {}
        for role, study in (("current", current), ("prior", prior)):
            paths = synthetic.write_study(study, Path(tmp) / role)
            loaded[role] = load_series(paths, modality="MR")
    model = LesionModel()
    volume, source = loaded["current"]
    for roles in (("current", "prior"), ("current",)):
        output = model.run(ModelInput({r: loaded[r][0] for r in roles}, {}))
        prior_source = loaded["prior"][1] if "prior" in roles else None
        results = encode(source, volume, output, Algorithm.of(model), segmentation_type=segmentation_type,
                         prior_source=prior_source)
        for ds in results.datasets():
            pydicom.dcmwrite(io.BytesIO(), ds, enforce_file_format=True)


def warm(segmentation_type: str = "BINARY") -> float:
    """Run the data path once and freeze the collector; the seconds it took (0 when it
    failed, which is logged, never raised: a cold worker still works)."""
    t = time.perf_counter()
    try:
        _exercise(segmentation_type)
    except Exception as exc:  # noqa: BLE001 - warming must never stop a worker
        log.warning("warm-up failed; jobs will run cold", error=repr(exc))
        return 0.0
    gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - t
    log.info("warmed the data path", seconds=round(seconds, 3))
    return seconds
