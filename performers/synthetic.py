"""Deterministic synthetic MR studies: a FLAIR-like brain phantom with known lesions.

Why: the acceptance tests of the whole pipeline (volume I/O, models, SEG/SR encoding,
the performer end to end) need studies whose truth is known *exactly*, that look like
what a PACS sends (real MR Image Storage instances that pass ``dciodvfy``), and that are
identical from run to run (same pixels, same UIDs) so failures reproduce.

The truth is defined in patient coordinates (LPS, mm), not voxels: a lesion is an
ellipsoid, and a voxel belongs to it when the voxel *centre* lies inside. The renderer
and :func:`truth_labels` apply that same rule, so the truth is exact in any voxel grid,
including the oblique acquisition (rotated slices) and whatever grid a loader produces.

Phantom (FLAIR-like): background ~0 with Rician-like noise; a "skull" shell darker than
brain; an ellipsoidal brain of tissue mean :data:`BRAIN_MEAN` plus Gaussian noise; two
dark CSF-suppressed "ventricles"; lesions at :data:`LESION_FACTOR` x the brain mean with
sharp edges.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

BRAIN_MEAN = 1000.0  # stored value of normal brain tissue
BRAIN_NOISE = 40.0  # Gaussian SD inside the brain (4 %: a good 3D FLAIR)
BACKGROUND_NOISE = 8.0  # SD of the Gaussian whose magnitude gives the background
SKULL_MEAN = 300.0  # brighter than background, darker than brain
VENTRICLE_MEAN = 250.0  # CSF is suppressed on FLAIR
LESION_FACTOR = 1.7  # lesions relative to the brain mean

# Lesion sizes the generator draws from (mm3). The lower bound keeps lesions above a
# handful of voxels at 1.5 mm spacing; the upper one is a large confluent MS plaque.
LESION_VOLUME_RANGE = (50.0, 3000.0)

# Oblique acquisition: rotation of the slice frame about patient x, then y (degrees).
OBLIQUE_ANGLES = (20.0, 10.0)

# Volume centre in patient coordinates; deliberately not the origin so that code
# assuming "centred at 0" fails.
VOLUME_CENTRE = np.array([1.5, -12.0, 25.0])

ISSUER_OF_PATIENT_ID = "AIW-SYNTH"
ISSUER_OF_ACCESSION = "AIW-SYNTH-RIS"


@dataclass(frozen=True)
class Lesion:
    """An ellipsoid in patient coordinates (LPS, mm); semi-axes along patient x, y, z."""

    center: tuple[float, float, float]
    radii: tuple[float, float, float]

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.radii
        return 4.0 / 3.0 * math.pi * a * b * c


@dataclass
class Series:
    datasets: list[Dataset]
    series_uid: str
    description: str
    oblique: bool


@dataclass
class Study:
    study_uid: str
    accession: str
    accession_issuer: str
    patient_id: str
    patient_id_issuer: str
    patient_name: str
    study_date: str
    series: list[Series]
    lesions: list[Lesion]

    @property
    def flair(self) -> Series:
        return self.series[0]


# --------------------------------------------------------------------------- identity

def _uid(*parts: object) -> str:
    """A deterministic '2.25.' UID: a name-based (v5) UUID of ``parts`` as PS3.5 B.2 wants."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, "aiw-synthetic/" + "/".join(map(str, parts))).int)


def _digest(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "big")


_GIVEN = ("ALEX", "SAM", "ROBIN", "KIM", "JO", "NOA", "ELI", "MIKA")
_FAMILY = ("SYNTH", "PHANTOM", "TESTER", "MODEL", "SAMPLE")


# --------------------------------------------------------------------------- geometry

def _rotation(oblique: bool) -> np.ndarray:
    """Columns: row direction (increasing column index), column direction (increasing
    row index), slice normal. Axial (LPS x, y, z) unless oblique."""
    if not oblique:
        return np.eye(3)
    ax, ay = (math.radians(a) for a in OBLIQUE_ANGLES)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return ry @ rx


def _grid(shape: tuple[int, int, int], spacing: tuple[float, float, float],
          oblique: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(origin, row_dir, col_dir, normal): position of voxel (row 0, col 0, slice 0) and
    unit vectors; the volume is centred on :data:`VOLUME_CENTRE`."""
    rows, cols, slices = shape
    dr, dc, ds = spacing
    rot = _rotation(oblique)
    row_dir, col_dir, normal = rot[:, 0], rot[:, 1], rot[:, 2]
    origin = (VOLUME_CENTRE - row_dir * dc * (cols - 1) / 2 - col_dir * dr * (rows - 1) / 2
              - normal * ds * (slices - 1) / 2)
    return origin, row_dir, col_dir, normal


def _brain_radii(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Brain semi-axes (x, y, z) in mm, scaled to the field of view so small test
    volumes still hold a whole brain (with room for the skull and an oblique rotation)."""
    rows, cols, slices = shape
    dr, dc, ds = spacing
    return np.array([0.36 * cols * dc, 0.40 * rows * dr, 0.36 * slices * ds])


# Ventricles in brain-normalised coordinates (centre, semi-axes) — left and right.
_VENTRICLES = (((-0.12, 0.02, 0.08), (0.08, 0.28, 0.16)), ((0.12, 0.02, 0.08), (0.08, 0.28, 0.16)))


# --------------------------------------------------------------------------- lesions

def _random_lesions(rng: np.random.Generator, n: int, brain: np.ndarray,
                    spacing: tuple[float, float, float]) -> list[Lesion]:
    """Ellipsoids well inside the brain, apart by at least three voxel diagonals so that
    no two touch even under 26-connectivity. Small test volumes get smaller lesions: the
    upper size bound halves every 100 failed placements."""
    lo, hi = LESION_VOLUME_RANGE
    gap = 3.0 * math.sqrt(3) * max(spacing)
    out: list[Lesion] = []
    for _ in range(n):
        for attempt in range(800):
            top = max(hi / 2 ** (attempt // 100), lo)
            volume = math.exp(rng.uniform(math.log(lo), math.log(top)))
            aspect = rng.uniform(0.7, 1.3, size=3)
            r = (3 * volume / (4 * math.pi) / aspect.prod()) ** (1 / 3) * aspect
            c = rng.uniform(-0.6, 0.6, size=3) * brain
            # whole ellipsoid (its bounding box) inside 85 % of the brain
            corners = np.abs(c) + r
            if np.sum((corners / (0.85 * brain)) ** 2) > 1.0:
                continue
            if any(np.linalg.norm(c - np.subtract(o.center, VOLUME_CENTRE)) < max(r) + max(o.radii) + gap
                   for o in out):
                continue
            out.append(Lesion(tuple(float(v) for v in c + VOLUME_CENTRE),  # type: ignore[arg-type]
                              tuple(float(v) for v in r)))  # type: ignore[arg-type]
            break
        else:
            raise ValueError(f"cannot place {n} separated lesions in a brain of radii {brain.round(1)} mm; "
                             "use fewer lesions or a larger volume")
    return out


def _inside(points: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Boolean mask: points (..., 3) inside the axis-aligned ellipsoid."""
    d = (points - np.asarray(centre, dtype=np.float64)) / np.asarray(radii, dtype=np.float64)
    return np.einsum("...i,...i->...", d, d) <= 1.0


def _label_points(lesions: Sequence[Lesion], affine: np.ndarray,
                  shape: tuple[int, int, int]) -> np.ndarray:
    """Label map over a voxel grid; each lesion is only evaluated in its bounding box."""
    labels = np.zeros(shape, dtype=np.int32)
    inv = np.linalg.inv(affine)
    for i, les in enumerate(lesions, start=1):
        c, r = np.asarray(les.center), np.asarray(les.radii)
        corners = np.array([[c[0] + sx * r[0], c[1] + sy * r[1], c[2] + sz * r[2], 1.0]
                            for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        idx = (inv @ corners.T)[:3]
        lo = np.maximum(np.floor(idx.min(axis=1)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(idx.max(axis=1)).astype(int) + 2, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        ii, jj, kk = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        pts = np.stack([ii, jj, kk], axis=-1) @ affine[:3, :3].T + affine[:3, 3]
        sub = labels[box]
        sub[_inside(pts, c, r)] = i
    return labels


def truth_labels(study: Study, volume: hd.Volume) -> np.ndarray:
    """Ground truth in ``volume``'s voxel grid: 0 background, i+1 for ``study.lesions[i]``.

    Computed from the ellipsoids and ``volume.affine`` only (voxel centre inside), so it
    is independent of how the volume was built, and exact for oblique grids too."""
    return _label_points(study.lesions, np.asarray(volume.affine, dtype=np.float64),
                         tuple(volume.spatial_shape))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rendering

def _render(shape: tuple[int, int, int], spacing: tuple[float, float, float], oblique: bool,
            lesions: Sequence[Lesion], rng: np.random.Generator) -> np.ndarray:
    """Pixel data as (slices, rows, columns) uint16."""
    rows, cols, slices = shape
    origin, row_dir, col_dir, normal = _grid(shape, spacing, oblique)
    dr, dc, ds = spacing
    # (slice, row, column) indices of the pixel array below -> patient coordinates
    affine = np.eye(4)
    affine[:3, 0] = normal * ds
    affine[:3, 1] = col_dir * dr
    affine[:3, 2] = row_dir * dc
    affine[:3, 3] = origin
    k, i, j = np.meshgrid(np.arange(slices, dtype=np.float32), np.arange(rows, dtype=np.float32),
                          np.arange(cols, dtype=np.float32), indexing="ij")
    a32 = affine.astype(np.float32)
    brain = _brain_radii(shape, spacing).astype(np.float32)
    c = VOLUME_CENTRE.astype(np.float32)
    # brain-normalised coordinates; float32 is plenty for the smooth anatomy
    u = [((a32[d, 0] * k + a32[d, 1] * i + a32[d, 2] * j + a32[d, 3]) - c[d]) / brain[d] for d in range(3)]
    del k, i, j
    r2 = u[0] ** 2 + u[1] ** 2 + u[2] ** 2
    img = np.abs(rng.normal(0.0, BACKGROUND_NOISE, size=r2.shape) +
                 1j * rng.normal(0.0, BACKGROUND_NOISE, size=r2.shape)).astype(np.float32)
    in_brain = r2 <= 1.0
    skull = (r2 > 1.0) & (r2 <= 1.12 ** 2)
    img[skull] = SKULL_MEAN + rng.normal(0.0, BRAIN_NOISE, size=int(skull.sum()))
    img[in_brain] = BRAIN_MEAN + rng.normal(0.0, BRAIN_NOISE, size=int(in_brain.sum()))
    for vc, vr in _VENTRICLES:
        v = ((u[0] - vc[0]) / vr[0]) ** 2 + ((u[1] - vc[1]) / vr[1]) ** 2 + ((u[2] - vc[2]) / vr[2]) ** 2 <= 1.0
        img[v] = VENTRICLE_MEAN + rng.normal(0.0, BRAIN_NOISE, size=int(v.sum()))
    del u, r2
    # lesions: exact voxel-centre rule in float64, evaluated only inside each bounding box
    labels = _label_points(lesions, affine, (slices, rows, cols))
    hit = labels > 0
    img[hit] = BRAIN_MEAN * LESION_FACTOR + rng.normal(0.0, BRAIN_NOISE, size=int(hit.sum()))
    return np.clip(np.rint(img), 0, 4095).astype(np.uint16)


# --------------------------------------------------------------------------- DICOM

def _instances(study: Study, series_uid: str, description: str, series_number: int,
               pixels: np.ndarray, shape: tuple[int, int, int], spacing: tuple[float, float, float],
               oblique: bool, for_uid: str, key: str) -> list[Dataset]:
    rows, cols, slices = shape
    dr, dc, ds_mm = spacing
    origin, row_dir, col_dir, normal = _grid(shape, spacing, oblique)
    iop = [float(v) for v in (*row_dir, *col_dir)]
    sd = (_digest(study.patient_id, "birth") % 20000)
    birth = (_dt.date(1950, 1, 1) + _dt.timedelta(days=sd)).strftime("%Y%m%d")
    sex = "FM"[_digest(study.patient_id, "sex") % 2]
    study_time = f"{8 + _digest(study.study_uid) % 10:02d}{_digest(study.study_uid, 'm') % 60:02d}00"
    out: list[Dataset] = []
    for s in range(slices):
        sop_uid = _uid(key, "instance", series_number, s)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study.study_date
        ds.StudyTime = study_time
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study_time
        ds.AccessionNumber = study.accession
        issuer = Dataset()
        issuer.LocalNamespaceEntityID = study.accession_issuer
        ds.IssuerOfAccessionNumberSequence = [issuer]
        ds.Modality = "MR"
        ds.Manufacturer = "AIW Synthetic"
        ds.InstitutionName = "AIW Test Hospital"
        ds.ReferringPhysicianName = ""
        ds.StationName = "AIWSYNTH1"
        ds.StudyDescription = "MRI BRAIN WITHOUT CONTRAST"
        ds.SeriesDescription = description
        ds.ManufacturerModelName = "Phantom 3T"
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.IssuerOfPatientID = study.patient_id_issuer
        ds.PatientBirthDate = birth
        ds.PatientSex = sex
        ds.BodyPartExamined = "BRAIN"
        ds.ScanningSequence = ["SE", "IR"]
        ds.SequenceVariant = ["SK", "SP", "MP"]
        ds.ScanOptions = ["PFP"]  # partial Fourier (phase), as 3D FLAIR protocols use
        ds.MRAcquisitionType = "3D"
        ds.SequenceName = "*spcir3d1"
        ds.AngioFlag = "N"
        ds.SliceThickness = _ds(ds_mm)
        ds.RepetitionTime = "5000"
        ds.EchoTime = "387"
        ds.InversionTime = "1800"
        ds.NumberOfAverages = "1"
        ds.ImagingFrequency = "123.2"
        ds.ImagedNucleus = "1H"
        ds.EchoNumbers = "1"
        ds.MagneticFieldStrength = "3"
        ds.SpacingBetweenSlices = _ds(ds_mm)
        ds.EchoTrainLength = "200"
        ds.PercentSampling = "100"
        ds.PercentPhaseFieldOfView = "100"
        ds.PixelBandwidth = "750"
        ds.SoftwareVersions = "aiw-synthetic 1"
        ds.ProtocolName = description
        ds.FlipAngle = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study.study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = f"{_digest(study.study_uid, 'id') % 100000}"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = s + 1
        ipp = origin + normal * ds_mm * s
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(np.dot(ipp, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [_ds(dr), _ds(dc)]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "1000"
        ds.WindowWidth = "2000"
        ds.PixelData = pixels[s].tobytes()
        out.append(ds)
    return out


def _ds(v: float) -> str:
    """A Decimal String (max 16 chars) that round-trips the value as closely as fits."""
    v = float(v)
    if abs(v) < 5e-11:
        return "0"
    for digits in range(15, 0, -1):
        s = f"{v:.{digits}g}"
        if "e" in s:
            s = f"{v:.{max(digits - 4, 1)}f}".rstrip("0").rstrip(".")
        if len(s) <= 16:
            return s
    raise ValueError(f"cannot encode {v} as DS")


# --------------------------------------------------------------------------- API

def make_study(seed: int = 0, *, shape: tuple[int, int, int] = (256, 256, 160),
               spacing: tuple[float, float, float] = (1.0, 1.0, 1.0), oblique: bool = False,
               lesions: Sequence[Lesion] | None = None, n_lesions: int = 5,
               patient: Study | None = None, study_date: str = "20261101") -> Study:
    """One MR brain study with a single 3D FLAIR series.

    ``shape`` is (rows, columns, slices), ``spacing`` (row, column, slice) in mm. Lesions
    are drawn from ``seed`` (independently of ``oblique``, so the axial and oblique study
    of one seed hold the same lesions) unless given. ``patient`` reuses another study's
    patient identity, for priors. Every UID derives from all arguments: equal arguments
    give equal studies, different ones never share a UID.
    """
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    spacing = tuple(float(v) for v in spacing)  # type: ignore[assignment]
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be (rows, columns, slices), each >= 8; got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive mm values; got {spacing}")
    _dt.datetime.strptime(study_date, "%Y%m%d")
    brain = _brain_radii(shape, spacing)
    if lesions is None:
        lesions = _random_lesions(np.random.default_rng([seed, 1]), n_lesions, brain, spacing)
    lesions = list(lesions)
    if patient is not None:
        pid, pname = patient.patient_id, patient.patient_name
    else:
        pid = f"AIW{_digest(seed, 'pid') % 10**8:08d}"
        pname = f"{_FAMILY[_digest(seed, 'f') % len(_FAMILY)]}^{_GIVEN[_digest(seed, 'g') % len(_GIVEN)]}"
    key = repr((seed, shape, spacing, oblique, tuple(lesions), pid, study_date))
    study = Study(study_uid=_uid(key, "study"), accession=f"A{_digest(key, 'acc') % 10**9:09d}",
                  accession_issuer=ISSUER_OF_ACCESSION, patient_id=pid,
                  patient_id_issuer=ISSUER_OF_PATIENT_ID, patient_name=pname,
                  study_date=study_date, series=[], lesions=lesions)
    pixels = _render(shape, spacing, oblique, lesions, np.random.default_rng(_digest(key, "noise")))
    series_uid = _uid(key, "series", 1)
    description = ("OBL " if oblique else "AX ") + "3D FLAIR"
    datasets = _instances(study, series_uid, description, 1, pixels, shape, spacing, oblique,
                          _uid(key, "for"), key)
    study.series.append(Series(datasets=datasets, series_uid=series_uid, description=description,
                               oblique=oblique))
    return study


def make_pair(seed: int = 0, **kw: object) -> tuple[Study, Study]:
    """(current, prior) of one patient. The prior is ~6 months earlier and lacks the
    current study's last two lesions (new since the prior; one if there are only two),
    and its largest lesion is smaller (radii x 0.85): counts and volumes grow."""
    current = make_study(seed, **kw)  # type: ignore[arg-type]
    les = list(current.lesions)
    n_new = 2 if len(les) >= 3 else min(1, len(les))
    prior_lesions = les[:len(les) - n_new]
    if prior_lesions:
        big = max(range(len(prior_lesions)), key=lambda i: prior_lesions[i].volume_mm3)
        b = prior_lesions[big]
        prior_lesions[big] = Lesion(b.center, tuple(r * 0.85 for r in b.radii))  # type: ignore[arg-type]
    prior_date = (_dt.datetime.strptime(current.study_date, "%Y%m%d") - _dt.timedelta(days=182)).strftime("%Y%m%d")
    pkw = {k: v for k, v in kw.items() if k not in ("lesions", "study_date", "patient", "n_lesions")}
    prior = make_study(seed, lesions=prior_lesions, patient=current, study_date=prior_date,
                       **pkw)  # type: ignore[arg-type]
    return current, prior


def write_study(study: Study, directory: Path) -> list[Path]:
    """Part 10 files, one per instance: ``<directory>/<series number>_<instance>.dcm``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for series in study.series:
        for ds in series.datasets:
            p = directory / f"{int(ds.SeriesNumber):02d}_{int(ds.InstanceNumber):04d}.dcm"
            ds.save_as(p, enforce_file_format=True)
            paths.append(p)
    return paths


__all__ = ["Lesion", "Series", "Study", "make_study", "make_pair", "truth_labels", "write_study"]
