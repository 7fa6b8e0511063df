"""Volumes carry the geometry every result depends on: check it against DICOM's own
definition (PS3.3 C.7.6.2.1.1), through NIfTI and back, and check the refusals a QA
person would read."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from performers.models.base import UnusableInput
from performers.synthetic import Study, make_study, write_study
from performers.volumes import GeometryMismatch, from_nifti, load_series, to_nifti

SMALL = dict(shape=(80, 72, 30), spacing=(1.5, 1.25, 2.0))  # anisotropic, non-square on purpose


@pytest.fixture(scope="module", params=[False, True], ids=["axial", "oblique"])
def study(request: pytest.FixtureRequest) -> Study:
    return make_study(2, oblique=request.param, **SMALL)


@pytest.fixture(scope="module")
def loaded(study: Study) -> tuple[hd.Volume, list]:
    shuffled = list(study.flair.datasets)
    random.Random(0).shuffle(shuffled)
    return load_series(shuffled, modality="MR")


def _dicom_position(ds, row: float, col: float) -> np.ndarray:
    """Patient position of pixel (row, col) of ``ds`` straight from PS3.3 C.7.6.2.1.1."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    return np.array([float(v) for v in ds.ImagePositionPatient]) + iop[:3] * dc * col + iop[3:] * dr * row


def test_volume_shape_and_order(study: Study, loaded: tuple[hd.Volume, list]) -> None:
    volume, datasets = loaded
    assert tuple(volume.spatial_shape) == (30, 80, 72)
    assert volume.frame_of_reference_uid == study.flair.datasets[0].FrameOfReferenceUID
    for i in (0, 7, 29):  # the returned datasets are the volume's slices, in order
        np.testing.assert_allclose(volume.affine @ [i, 0, 0, 1], [*_dicom_position(datasets[i], 0, 0), 1], atol=1e-6)
        assert np.array_equal(volume.array[i], datasets[i].pixel_array.astype(np.float32))


def test_every_voxel_maps_where_dicom_says(study: Study, loaded: tuple[hd.Volume, list]) -> None:
    """Independently of load_series's ordering: locate each sampled voxel's position in
    the original (unsorted) instances and compare the pixel value found there."""
    volume, _ = loaded
    rng = np.random.default_rng(0)
    iop = np.array([float(v) for v in study.flair.datasets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    ipps = np.array([[float(v) for v in d.ImagePositionPatient] for d in study.flair.datasets])
    for i, j, k in zip(rng.integers(0, 30, 50), rng.integers(0, 80, 50), rng.integers(0, 72, 50)):
        p = volume.affine[:3, :3] @ [i, j, k] + volume.affine[:3, 3]
        s = int(np.argmin(np.abs((ipps - p) @ normal)))
        assert abs((ipps[s] - p) @ normal) < 1e-6
        ds = study.flair.datasets[s]
        row = (p - ipps[s]) @ iop[3:] / float(ds.PixelSpacing[0])
        col = (p - ipps[s]) @ iop[:3] / float(ds.PixelSpacing[1])
        assert (row, col) == pytest.approx((j, k), abs=1e-6)
        np.testing.assert_allclose(_dicom_position(ds, j, k), p, atol=1e-6)
        assert volume.array[i, j, k] == ds.pixel_array[j, k]


def test_load_from_files_equals_load_from_datasets(study: Study, loaded: tuple[hd.Volume, list],
                                                   tmp_path: Path) -> None:
    paths = write_study(study, tmp_path)
    volume, _ = load_series([str(p) for p in reversed(paths)])
    assert np.array_equal(volume.affine, loaded[0].affine)
    assert np.array_equal(volume.array, loaded[0].array)


def test_nifti_round_trip_keeps_geometry_and_voxels(loaded: tuple[hd.Volume, list], tmp_path: Path) -> None:
    volume, _ = loaded
    path = to_nifti(volume, tmp_path / "v.nii.gz")
    back = from_nifti(path, like=volume)
    # NIfTI-1 stores the affine as float32: exact to float32 precision, ~1e-5 mm here
    assert np.abs(back.affine - volume.affine).max() < 1e-4
    assert np.array_equal(back.array, volume.array)
    assert back.frame_of_reference_uid == volume.frame_of_reference_uid
    labels = volume.with_array((volume.array > 1300).astype(np.uint8))
    back_labels = from_nifti(to_nifti(labels, tmp_path / "l.nii.gz"), like=volume)
    assert np.array_equal(back_labels.array, labels.array) and back_labels.array.dtype == np.uint8


def test_nifti_file_holds_the_ras_affine(loaded: tuple[hd.Volume, list], tmp_path: Path) -> None:
    volume, _ = loaded
    image = nib.load(to_nifti(volume, tmp_path / "v.nii.gz"))
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    np.testing.assert_allclose(image.affine, lps_to_ras @ volume.affine, atol=1e-4)
    assert image.header.get_sform(coded=True)[1] > 0 and image.header.get_xyzt_units()[0] == "mm"
    assert image.shape == tuple(volume.spatial_shape)


def _save_ras(array: np.ndarray, lps_affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine), path)
    return path


def test_from_nifti_names_the_geometry_difference(loaded: tuple[hd.Volume, list], tmp_path: Path) -> None:
    volume, _ = loaded
    a = volume.affine.copy()
    data = np.zeros(volume.spatial_shape, np.uint8)

    shifted = a.copy()
    shifted[:3, 3] += a[:3, 2]  # one voxel along the columns
    with pytest.raises(GeometryMismatch, match=r"origin shifted .*\[0\.0, 0\.0, 1\.0\] voxels"):
        from_nifti(_save_ras(data, shifted, tmp_path / "s.nii.gz"), like=volume)

    flipped = a.copy()
    flipped[:3, 1] *= -1
    flipped[:3, 3] = a[:3, :3] @ [0, volume.spatial_shape[1] - 1, 0] + a[:3, 3]
    with pytest.raises(GeometryMismatch, match=r"axis 1 \(rows\) is flipped"):
        from_nifti(_save_ras(data, flipped, tmp_path / "f.nii.gz"), like=volume)

    with pytest.raises(GeometryMismatch, match=r"shape \(30, 80, 71\) differs from \(30, 80, 72\)"):
        from_nifti(_save_ras(data[:, :, :71].copy(), a, tmp_path / "c.nii.gz"), like=volume)

    spaced = a.copy()
    spaced[:3, 0] *= 1.01
    with pytest.raises(GeometryMismatch, match=r"axis 0 \(slices\) spacing is 2\.02 mm, expected 2 mm"):
        from_nifti(_save_ras(data, spaced, tmp_path / "p.nii.gz"), like=volume)


def test_from_nifti_refuses_4d(tmp_path: Path) -> None:
    path = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), path)
    with pytest.raises(GeometryMismatch, match="4 dimensions"):
        from_nifti(path)


# --------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def series() -> list:
    return make_study(4, shape=(48, 48, 16), spacing=(1.5, 1.5, 1.5)).flair.datasets


def _reason(datasets, **kw) -> UnusableInput:
    with pytest.raises(UnusableInput) as info:
        load_series(datasets, **kw)
    return info.value


def test_missing_slice_is_an_incomplete_set(series: list) -> None:
    err = _reason(series[:7] + series[8:])
    assert err.reason.value == "110523"
    assert str(err) == (f"series {series[0].SeriesInstanceUID}: slice spacing varies between 1.5 and 3 mm "
                        "(a slice is missing?)")


def test_duplicate_slice_mixed_series_and_frame_of_reference_are_incomplete_sets(series: list) -> None:
    dup = copy.deepcopy(series[3])
    dup.SOPInstanceUID = "1.2.3.4"
    err = _reason(series + [dup])
    assert err.reason.value == "110523" and "same position" in str(err) and "duplicated slice" in str(err)

    other = make_study(5, shape=(48, 48, 16), spacing=(1.5, 1.5, 1.5)).flair.datasets
    err = _reason(series[:8] + other[8:])
    assert err.reason.value == "110523" and "belong to 2 series" in str(err)

    moved = [copy.deepcopy(d) for d in series]
    moved[2].FrameOfReferenceUID = "1.2.3.999"
    err = _reason(moved)
    assert err.reason.value == "110523" and "frames of reference" in str(err) and "1.2.3.999" in str(err)


def test_too_few_slices_is_an_incomplete_set(series: list) -> None:
    err = _reason(series[:2])
    assert err.reason.value == "110523" and "2 slice(s); a volume needs at least 3" in str(err)
    assert _reason([]).reason.value == "110523"


def test_wrong_modality_is_not_supported(series: list) -> None:
    ct = [copy.deepcopy(d) for d in series]
    for d in ct:
        d.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        d.Modality = "CT"
    err = _reason(ct, modality="MR")
    assert err.reason.value == "110522"
    assert "Modality (0008,0060) is CT, the model needs MR" in str(err)


def test_non_images_are_not_supported(series: list, tmp_path: Path) -> None:
    sr = [copy.deepcopy(d) for d in series]
    sr[0].SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    err = _reason(sr)
    assert err.reason.value == "110522" and "Enhanced SR" in str(err) and "not a single-frame" in str(err)

    nopix = [copy.deepcopy(d) for d in series]
    del nopix[5].PixelData
    err = _reason(nopix)
    assert err.reason.value == "110522" and "no Pixel Data (7FE0,0010)" in str(err)

    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    err = _reason([junk])
    assert err.reason.value == "110522" and "junk.dcm: not a readable DICOM file" in str(err)


@pytest.mark.parametrize("oblique", [False, True])
def test_volume_equals_highdicoms_own_construction(oblique: bool) -> None:
    """load_series builds the volume from the checked stack itself (highdicom's
    get_volume_from_series is ~7x slower); both must agree exactly, rescale included."""
    study = make_study(31, shape=(48, 48, 16), spacing=(1.5, 1.5, 2.5), n_lesions=2, oblique=oblique)
    datasets = [copy.deepcopy(ds) for ds in study.flair.datasets]
    for k, ds in enumerate(datasets):  # a Modality LUT that differs per slice
        ds.RescaleSlope, ds.RescaleIntercept = 0.5 + k / 10, -k
    volume, order = load_series(list(reversed(datasets)))
    reference = hd.get_volume_from_series(datasets, dtype=np.float32)
    assert np.array_equal(volume.affine, reference.affine)
    assert np.allclose(volume.array, reference.array)
    inverse = reference.inverse_affine
    assert [round(float((inverse @ np.array([*map(float, ds.ImagePositionPatient), 1.0]))[0])) for ds in order] \
        == list(range(len(order)))


# --------------------------------------------------------------------------- pixel values

def _image(allocated: int, stored: int, signed: bool, words: np.ndarray, syntax: str) -> pydicom.Dataset:
    from pydicom.dataset import FileMetaDataset

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.Rows, ds.Columns = words.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, stored, stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = words.astype(f">u{allocated // 8}" if syntax == pydicom.uid.ExplicitVRBigEndian
                                else f"<u{allocated // 8}").tobytes()
    return ds


@given(data=st.data(), allocated=st.sampled_from([8, 16, 32]), signed=st.booleans(),
       syntax=st.sampled_from(["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]))
@settings(max_examples=150, deadline=None)
def test_pixel_values_are_exactly_pydicoms(data: st.DataObject, allocated: int, signed: bool, syntax: str) -> None:
    """Whatever the high bits hold (overlays, garbage), the values are pydicom's: the
    fast path clears unused bits or extends the sign as pydicom does; big endian goes
    through pydicom itself."""
    from performers.volumes import _pixels

    stored = data.draw(st.integers(1, allocated))
    shape = (data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5)))
    raw = data.draw(st.lists(st.integers(0, 2 ** allocated - 1), min_size=shape[0] * shape[1],
                             max_size=shape[0] * shape[1]))
    ds = _image(allocated, stored, signed, np.array(raw, dtype=np.uint64).reshape(shape), syntax)
    want, got = ds.pixel_array, _pixels(ds)
    assert got.dtype == want.dtype and np.array_equal(got, want)
