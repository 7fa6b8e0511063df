"""The reference model: hyperintense lesion detection on FLAIR-like MR (CPU, no weights).

Why this algorithm: FLAIR suppresses CSF, so MS-type lesions are the voxels clearly
brighter than normal brain. The model needs no training and is fully explainable, so
it can serve as the reference the whole pipeline (geometry, SEG, SR, priors) is tested
against, with synthetic truth (:mod:`performers.synthetic`):

1. foreground: Otsu's threshold of the intensity histogram; the largest connected
   component, holes filled (ventricles are dark on FLAIR), is the brain region;
2. brain intensity: median and MAD of the brain-region voxels above the Otsu threshold
   (robust: lesions are a few percent of them), sigma = 1.4826 x MAD;
3. lesion voxels: inside the brain region and above median + ``threshold_factor`` x sigma;
4. lesions: connected components with **26-connectivity** (face, edge or corner
   neighbours), so a thin lesion oblique to the voxel grid stays one lesion; components
   smaller than ``min_lesion_mm3`` are dropped as noise;
5. volume of a lesion = voxel count x voxel volume (mm3); labels 1..N by volume, largest
   first.

With a prior, the same detection runs on the prior volume in its own grid; only the
totals are compared (count and volume change); lesions are not matched one to one,
which would need registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import highdicom as hd
import numpy as np
from scipy import ndimage

from performers.models.base import (
    BRAIN,
    CHANGE_IN_LESION_COUNT,
    CHANGE_IN_TOTAL_VOLUME,
    COUNT_UNIT,
    LESION,
    MM3,
    NUMBER_OF_LESIONS,
    TOTAL_LESION_VOLUME,
    VOLUME,
    Code,
    Finding,
    InputSpec,
    Measurement,
    ModelInput,
    ModelOutput,
    Qualitative,
    UnusableInput,
)

# Processing parameters: code value (also the key echoed in ModelOutput.parameters; 16
# characters at most so it fits a Code Value) -> (meaning, default).
THRESHOLD_FACTOR = "threshold_factor"
MIN_LESION_MM3 = "min_lesion_mm3"
PARAMETERS: dict[str, tuple[str, float]] = {
    THRESHOLD_FACTOR: ("Lesion threshold in robust SDs above the brain median", 5.0),
    MIN_LESION_MM3: ("Minimum lesion volume (mm3)", 10.0),
}

# Study-level trend of the total lesion volume since the prior. No standard concept
# name fits, hence 99AIW; the values are SNOMED CT qualifiers.
LESION_BURDEN_TREND = Code("AIW-0004", "99AIW", "Lesion burden trend since prior")
INCREASED = Code("35105006", "SCT", "Increased")
DECREASED = Code("1250004", "SCT", "Decreased")
NO_CHANGE = Code("260388006", "SCT", "No change")
TREND_BAND = 0.10  # relative change in total volume below which the burden is "No change"

_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
_MIN_BRAIN_FRACTION = 0.005  # of all voxels; less is not a brain image


@dataclass
class Detection:
    """Lesions found in one volume: ``labels`` 1..N ordered by volume (largest first),
    ``volumes_mm3[i]`` belongs to label i+1; the statistics explain the threshold."""

    labels: np.ndarray
    volumes_mm3: list[float]
    brain_median: float
    brain_sigma: float
    threshold: float

    @property
    def count(self) -> int:
        return len(self.volumes_mm3)

    @property
    def total_mm3(self) -> float:
        return float(sum(self.volumes_mm3))


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance) of ``values``' histogram.

    Written out because it is twenty lines and the project has no image-processing
    library that provides it (scipy.ndimage does not)."""
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise ValueError("constant image")
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centres)
    m0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    m1 = np.divide(s0[-1] - s0, w1, out=np.zeros_like(s0), where=w1 > 0)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def _check_3d(volume: hd.Volume, role: str) -> np.ndarray:
    if volume.number_of_channel_dimensions:
        raise UnusableInput("110522", f"{role} volume has channels {volume.channel_shape} (colour?); "
                                      "the model needs a grayscale 3D volume")
    if min(volume.spatial_shape) < 3:
        raise UnusableInput("110522", f"{role} volume has shape {tuple(volume.spatial_shape)} "
                                      "(slices, rows, columns); the model needs a 3D volume, at least 3 in each")
    return np.asarray(volume.array, dtype=np.float32)


def _brain_region(array: np.ndarray, role: str) -> tuple[np.ndarray, float]:
    """(filled brain-region mask, Otsu threshold), or 110531 if there is no brain."""
    finite = array[np.isfinite(array)]
    try:
        otsu = otsu_threshold(finite)
    except ValueError:
        raise UnusableInput("110531", f"{role} volume is blank (every voxel is {float(finite.flat[0]):g}): "
                                      "no brain to analyse") from None
    fg = array > otsu
    comps, n = ndimage.label(fg)
    if n == 0:
        raise UnusableInput("110531", f"{role} volume: no foreground above the Otsu threshold {otsu:g}")
    sizes = np.bincount(comps.ravel())
    sizes[0] = 0
    mask = ndimage.binary_fill_holes(comps == int(np.argmax(sizes)))
    if mask.sum() < _MIN_BRAIN_FRACTION * array.size:
        raise UnusableInput("110531", f"{role} volume: the foreground is {int(mask.sum())} voxels "
                                      f"({100 * mask.mean():.2f} % of the image); no brain found")
    return mask, otsu


def detect(volume: hd.Volume, *, threshold_factor: float = PARAMETERS[THRESHOLD_FACTOR][1],
           min_lesion_mm3: float = PARAMETERS[MIN_LESION_MM3][1], role: str = "current") -> Detection:
    """Lesions in one volume (algorithm in the module docstring)."""
    array = _check_3d(volume, role)
    mask, otsu = _brain_region(array, role)
    tissue = array[mask & (array > otsu)]
    median = float(np.median(tissue))
    # the floor keeps a noise-free image from thresholding at its own median
    sigma = max(1.4826 * float(np.median(np.abs(tissue - median))), 0.01 * abs(median))
    threshold = median + threshold_factor * sigma
    comps, n = ndimage.label(mask & (array > threshold), structure=_CONNECTIVITY_26)
    voxel_mm3 = float(volume.voxel_volume)
    counts = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    keep = [i for i in np.argsort(-counts, kind="stable") if counts[i] * voxel_mm3 >= min_lesion_mm3]
    lut = np.zeros(n + 1, dtype=np.uint16 if len(keep) < 65535 else np.uint32)
    for new, old in enumerate(keep, start=1):
        lut[old + 1] = new
    return Detection(labels=lut[comps], volumes_mm3=[float(counts[i]) * voxel_mm3 for i in keep],
                     brain_median=median, brain_sigma=sigma, threshold=threshold)


def _parameters(given: Mapping[str, str | float]) -> dict[str, float]:
    """Defaults overridden by the workitem's parameters, found by code value or meaning."""
    out: dict[str, float] = {}
    for key, (meaning, default) in PARAMETERS.items():
        raw = given.get(key, given.get(meaning, default))
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"processing parameter {key} ({meaning}) must be a number, got {raw!r}") from None
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"processing parameter {key} ({meaning}) must be a finite number >= 0, got {raw!r}")
        out[key] = value
    return out


def _trend(current: float, prior: float) -> Code:
    if prior == 0:
        return INCREASED if current > 0 else NO_CHANGE
    change = (current - prior) / prior
    return INCREASED if change > TREND_BAND else DECREASED if change < -TREND_BAND else NO_CHANGE


class LesionModel:
    """The reference model as a :class:`~performers.models.base.Model` plugin."""

    name = "aiw-flair-lesions"
    version = "1.0.0"
    manufacturer = "aiw"
    device_uid = "2.25.289767514826206864942310376922485200907"
    workitem_code = Code("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
    inputs = (InputSpec("current", "MR", description="3D FLAIR"),
              InputSpec("prior", "MR", required=False, description="earlier 3D FLAIR of the same patient"))

    def run(self, inputs: ModelInput) -> ModelOutput:
        params = _parameters(inputs.parameters)
        found = detect(inputs.current, **params)
        findings = [Finding(label=i, finding_type=LESION, description=f"Lesion {i}", site=BRAIN,
                            measurements=[Measurement(VOLUME, round(v, 3), MM3)])
                    for i, v in enumerate(found.volumes_mm3, start=1)]
        summary = [Measurement(NUMBER_OF_LESIONS, float(found.count), COUNT_UNIT),
                   Measurement(TOTAL_LESION_VOLUME, round(found.total_mm3, 3), MM3)]
        qualitative: list[Qualitative] = []
        if inputs.prior is not None:
            before = detect(inputs.prior, role="prior", **params)
            summary += [Measurement(CHANGE_IN_LESION_COUNT, float(found.count - before.count), COUNT_UNIT),
                        Measurement(CHANGE_IN_TOTAL_VOLUME, round(found.total_mm3 - before.total_mm3, 3), MM3)]
            qualitative.append(Qualitative(LESION_BURDEN_TREND, _trend(found.total_mm3, before.total_mm3)))
        return ModelOutput(label_map=found.labels, findings=findings, summary=summary,
                           qualitative=qualitative, parameters=dict(params))


__all__ = ["LesionModel", "Detection", "detect", "otsu_threshold", "PARAMETERS", "THRESHOLD_FACTOR",
           "MIN_LESION_MM3", "LESION_BURDEN_TREND", "INCREASED", "DECREASED", "NO_CHANGE"]
