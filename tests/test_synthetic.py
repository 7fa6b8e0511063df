"""The synthetic studies are the ground truth of every model test: they must be valid
DICOM, reproducible, and their truth must match the pixels exactly (also oblique)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from performers import synthetic
from performers.synthetic import Lesion, make_pair, make_study, truth_labels, write_study

SMALL = dict(shape=(96, 96, 40), spacing=(1.5, 1.5, 1.5))
TINY = dict(shape=(64, 64, 32), spacing=(1.5, 1.5, 1.5))


@pytest.fixture(scope="module")
def axial() -> synthetic.Study:
    return make_study(7, **SMALL)


@pytest.fixture(scope="module")
def oblique() -> synthetic.Study:
    return make_study(7, oblique=True, **SMALL)


def _volume(study: synthetic.Study) -> hd.Volume:
    return hd.get_volume_from_series(study.flair.datasets, dtype=np.float32)


def test_same_seed_same_study_uids_and_pixels() -> None:
    a, b = make_study(3, **TINY), make_study(3, **TINY)
    assert (a.study_uid, a.flair.series_uid, a.accession, a.patient_id) == \
        (b.study_uid, b.flair.series_uid, b.accession, b.patient_id)
    assert [d.SOPInstanceUID for d in a.flair.datasets] == [d.SOPInstanceUID for d in b.flair.datasets]
    assert all(x.PixelData == y.PixelData for x, y in zip(a.flair.datasets, b.flair.datasets))
    c = make_study(4, **TINY)
    assert c.study_uid != a.study_uid and c.patient_id != a.patient_id
    assert c.lesions != a.lesions


def test_uids_are_valid_and_distinct(axial: synthetic.Study, oblique: synthetic.Study) -> None:
    uids = [axial.study_uid, oblique.study_uid, axial.flair.series_uid, oblique.flair.series_uid]
    uids += [d.SOPInstanceUID for d in axial.flair.datasets + oblique.flair.datasets]
    assert len(set(uids)) == len(uids)
    for uid in uids:
        assert uid.startswith("2.25.") and len(uid) <= 64 and pydicom.uid.UID(uid).is_valid


def test_axial_and_oblique_of_one_seed_share_lesions(axial: synthetic.Study, oblique: synthetic.Study) -> None:
    assert axial.lesions == oblique.lesions and len(axial.lesions) == 5


def test_lesions_are_separated_sized_and_inside_the_brain() -> None:
    for seed in range(6):
        s = make_study(seed, shape=(128, 128, 64), spacing=(1.5, 1.5, 1.5), n_lesions=6)
        brain = synthetic._brain_radii((128, 128, 64), (1.5, 1.5, 1.5))
        for i, les in enumerate(s.lesions):
            assert 50 <= les.volume_mm3 <= 3000
            c = np.subtract(les.center, synthetic.VOLUME_CENTRE)
            assert np.sum(((np.abs(c) + les.radii) / brain) ** 2) <= 1.0
            for other in s.lesions[i + 1:]:
                assert np.linalg.norm(np.subtract(les.center, other.center)) > max(les.radii) + max(other.radii) + 5


@pytest.mark.parametrize("which", ["axial", "oblique"])
def test_dciodvfy_reports_no_errors(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    study = request.getfixturevalue(which)
    paths = write_study(study, tmp_path)
    for p in (paths[0], paths[len(paths) // 2]):
        out = subprocess.run(["dciodvfy", str(p)], capture_output=True, text=True, timeout=60)
        report = out.stdout + out.stderr
        assert "MRImage" in report
        assert not [line for line in report.splitlines() if line.startswith("Error")], report
        assert not [line for line in report.splitlines() if line.startswith("Warning")], report


def test_mr_attributes_a_pacs_and_a_task_manager_need(axial: synthetic.Study) -> None:
    ds = axial.flair.datasets[0]
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (ds.PatientID, ds.IssuerOfPatientID, ds.PatientName) == \
        (axial.patient_id, axial.patient_id_issuer, axial.patient_name)
    assert ds.AccessionNumber == axial.accession
    assert ds.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == axial.accession_issuer
    assert ds.StudyDate == axial.study_date == "20261101"
    assert ds.MRAcquisitionType == "3D" and "IR" in ds.ScanningSequence and float(ds.InversionTime) > 0
    assert (ds.BitsAllocated, ds.PixelRepresentation, ds.PhotometricInterpretation) == (16, 0, "MONOCHROME2")
    assert float(ds.SpacingBetweenSlices) == float(ds.SliceThickness) == 1.5
    assert [float(v) for v in ds.PixelSpacing] == [1.5, 1.5]
    assert len({d.FrameOfReferenceUID for d in axial.flair.datasets}) == 1
    assert ds.pixel_array.shape == (96, 96) and ds.pixel_array.dtype == np.uint16


def test_oblique_geometry_is_rotated_and_stacked_along_the_normal(oblique: synthetic.Study) -> None:
    dss = oblique.flair.datasets
    iop = np.array([float(v) for v in dss[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    assert np.abs(np.abs(iop) - np.round(np.abs(iop))).max() > 0.1  # not axis-aligned
    assert abs(row @ col) < 1e-9 and abs(np.linalg.norm(row) - 1) < 1e-9
    normal = np.cross(row, col)
    pos = np.array([[float(v) for v in d.ImagePositionPatient] for d in dss])
    steps = np.diff(pos, axis=0)
    np.testing.assert_allclose(steps, np.tile(normal * 1.5, (len(dss) - 1, 1)), atol=1e-6)


@pytest.mark.parametrize("which", ["axial", "oblique"])
def test_truth_is_exactly_the_hyperintense_voxels(which: str, request: pytest.FixtureRequest) -> None:
    study = request.getfixturevalue(which)
    volume = _volume(study)
    truth = truth_labels(study, volume)
    assert truth.shape == tuple(volume.spatial_shape) and set(np.unique(truth)) == set(range(6))
    bright = volume.array > (synthetic.BRAIN_MEAN * (1 + synthetic.LESION_FACTOR) / 2)
    assert np.array_equal(bright, truth > 0)
    # each label sits at its lesion: voxel-centroid within a voxel of the ellipsoid centre
    for i, les in enumerate(study.lesions, start=1):
        idx = np.argwhere(truth == i).mean(axis=0)
        centroid = volume.affine[:3, :3] @ idx + volume.affine[:3, 3]
        assert np.linalg.norm(centroid - les.center) < 1.5


def test_truth_voxel_volume_approaches_analytic_volume() -> None:
    les = [Lesion((10.0, -20.0, 30.0), (8.0, 6.0, 5.0)), Lesion((-25.0, 10.0, 20.0), (4.0, 4.0, 4.0))]
    s = make_study(1, shape=(128, 128, 64), spacing=(1.0, 1.0, 1.0), lesions=les)
    truth = truth_labels(s, _volume(s))
    for i, lesion in enumerate(les, start=1):
        assert (truth == i).sum() == pytest.approx(lesion.volume_mm3, rel=0.05)


def test_phantom_intensities_look_like_flair(axial: synthetic.Study) -> None:
    arr = _volume(axial).array
    assert np.median(arr[:, :4, :4]) < 30  # background corner
    centre = arr[arr.shape[0] // 2, 40:56, 20:30]
    assert abs(float(np.median(centre)) - synthetic.BRAIN_MEAN) < 100


def test_pair_is_one_patient_with_an_earlier_prior() -> None:
    current, prior = make_pair(5, **SMALL)
    assert prior.patient_id == current.patient_id and prior.patient_name == current.patient_name
    assert prior.study_date < current.study_date and prior.study_uid != current.study_uid
    assert prior.accession != current.accession
    assert len(prior.lesions) == len(current.lesions) - 2
    assert sum(x.volume_mm3 for x in prior.lesions) < sum(x.volume_mm3 for x in current.lesions)
    shared = [les.center for les in prior.lesions]
    assert all(c in [les.center for les in current.lesions] for c in shared)


def test_write_study_writes_readable_part10_files(axial: synthetic.Study, tmp_path: Path) -> None:
    paths = write_study(axial, tmp_path / "out")
    assert len(paths) == 40 and all(p.suffix == ".dcm" for p in paths)
    back = pydicom.dcmread(paths[3])
    assert back.SOPInstanceUID == axial.flair.datasets[3].SOPInstanceUID
    assert np.array_equal(back.pixel_array, axial.flair.datasets[3].pixel_array)


def test_full_size_study_is_generated_in_seconds() -> None:
    t = time.perf_counter()
    s = make_study(11)
    elapsed = time.perf_counter() - t
    assert len(s.flair.datasets) == 160 and (s.flair.datasets[0].Rows, s.flair.datasets[0].Columns) == (256, 256)
    assert elapsed < 10, f"256x256x160 took {elapsed:.1f} s"
