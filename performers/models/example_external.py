"""A minimal vendor-style model entry point: ``python -m performers.models.example_external IN OUT``.

Why it exists: it is what a vendor's container runs, written only against the file
contract of :mod:`performers.models.external` (nibabel + numpy + scipy, nothing from
this project), so the adapter's tests exercise that contract for real.

It thresholds bright voxels (median + k x robust SD of the voxels above the image mean,
which on a head image are mostly brain), labels them with 26-connectivity, drops
components below a minimum volume, and writes ``labels.nii.gz`` on the input's grid
(header and affine copied) and ``results.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

LESION = {"value": "52988006", "scheme": "SCT", "meaning": "Lesion"}
BRAIN = {"value": "12738006", "scheme": "SCT", "meaning": "Brain"}
VOLUME = {"value": "118565006", "scheme": "SCT", "meaning": "Volume"}
MM3 = {"value": "mm3", "scheme": "UCUM", "meaning": "cubic millimeter"}
COUNT = {"value": "246206008", "scheme": "SCT", "meaning": "Number of lesions"}
LESIONS_UNIT = {"value": "{lesions}", "scheme": "UCUM", "meaning": "lesions"}
TOTAL = {"value": "AIW-0001", "scheme": "99AIW", "meaning": "Total lesion volume"}


def segment(data: np.ndarray, voxel_mm3: float, k: float, min_mm3: float) -> tuple[np.ndarray, list[float]]:
    """(labels 1..N largest first, volumes in mm3)."""
    fg = data[data > data.mean()]
    med = float(np.median(fg))
    sd = max(1.4826 * float(np.median(np.abs(fg - med))), 0.01 * abs(med))
    comps, n = ndimage.label(data > med + k * sd, structure=np.ones((3, 3, 3), bool))
    counts = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    keep = [i for i in np.argsort(-counts, kind="stable") if counts[i] * voxel_mm3 >= min_mm3]
    lut = np.zeros(n + 1, np.uint16)
    lut[[i + 1 for i in keep]] = np.arange(1, len(keep) + 1)
    return lut[comps], [float(counts[i]) * voxel_mm3 for i in keep]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m performers.models.example_external INPUT_DIR OUTPUT_DIR", file=sys.stderr)
        return 2
    indir, outdir = Path(argv[0]), Path(argv[1])
    params = json.loads((indir / "parameters.json").read_text())
    k = float(params.get("threshold_factor", 5.0))
    min_mm3 = float(params.get("min_lesion_mm3", 10.0))
    image = nib.load(indir / "current.nii.gz")
    voxel_mm3 = float(np.prod(image.header.get_zooms()[:3]))
    labels, volumes = segment(np.asarray(image.dataobj, dtype=np.float32), voxel_mm3, k, min_mm3)
    header = image.header.copy()
    header.set_data_dtype(np.uint16)
    header.set_slope_inter(1.0, 0.0)
    nib.save(nib.Nifti1Image(labels, image.affine, header), outdir / "labels.nii.gz")
    findings = [{"label": i, "type": LESION, "site": BRAIN, "description": f"Lesion {i}",
                 "measurements": [{"name": VOLUME, "value": v, "unit": MM3}]}
                for i, v in enumerate(volumes, start=1)]
    summary = [{"name": COUNT, "value": float(len(volumes)), "unit": LESIONS_UNIT},
               {"name": TOTAL, "value": float(sum(volumes)), "unit": MM3}]
    (outdir / "results.json").write_text(json.dumps(
        {"findings": findings, "summary": summary,
         "parameters": {"threshold_factor": k, "min_lesion_mm3": min_mm3}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
