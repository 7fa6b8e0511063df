"""Results encoding (performers.results) and the dciodvfy wrapper (performers.dciodvfy).

What is asserted is what the receivers see: dciodvfy's verdict on every object written;
a viewer's reading of the SEG (segments, labels, and voxels on exactly the source slices,
axial and oblique); a reader's reading of the SR (the AI as device observer, values and
UCUM units, links to the SEG segments, preliminary flags, the prior as evidence); and
the identifiers a PACS files the objects under.

Studies come from :mod:`performers.synthetic` (64x64x24, anisotropic 1.5x1.5x3 mm); the
"model output" is the synthetic truth with volumes measured by voxel counting.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from performers import dciodvfy, synthetic
from performers.models.base import (
    BRAIN, CHANGE_IN_LESION_COUNT, CHANGE_IN_TOTAL_VOLUME, COUNT_UNIT, LESION, MM3, NUMBER_OF_LESIONS,
    TOTAL_LESION_VOLUME, VOLUME, Code, Finding, Measurement, ModelOutput, Qualitative,
)
from performers.results import (
    ARTIFICIAL_INTELLIGENCE, FINDING_CATEGORY, MORPHOLOGICALLY_ABNORMAL_STRUCTURE, MRI_OF_BRAIN, Algorithm,
    Results, encode,
)

SHAPE = (64, 64, 24)
SPACING = (1.5, 1.5, 3.0)
ALGORITHM = Algorithm(name="AIW Lesion Test", version="2.1.0", manufacturer="AIW Test Vendor",
                      device_uid="2.25.123456789012345678901234567890")

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"

# dciodvfy (dicom3tools 1.00~20220618, the Debian package) predates Label Map Segmentation
# (Sup 243, in the standard since 2024). These are the only errors tolerated, each exactly:
# - it does not know the Label Map Segmentation Storage SOP Class at all;
DCIODVFY_UNKNOWN_IOD = "Error - Information Object Not found"
# - it still applies the pre-2024 rule "segment numbers start at 1", but a label map's
#   Segment Number 0 is the background (highdicom always writes it; allowed since Sup 243);
DCIODVFY_SEGMENT_ZERO = ("Error - SegmentNumber not monotonically increasing from one by one - have "
                         "SegmentSequence item number 1 (from one) with SegmentNumber of 0")
# - in an SR, it allows Referenced Segment Number only when the referenced SOP Class is one
#   it knows as a segmentation, so every reference to a label-map segment is flagged;
DCIODVFY_SR_SEGMENT_REF = ("Error - Shall not be present for Referenced SOP Class that is not segmentation"
                           " - attribute <ReferencedSegmentNumber>")
# - checked as (binary) Segmentation Storage, a label map differs by design in exactly these.
DCIODVFY_LABELMAP_AS_SEG = {
    "Error - Unrecognized enumerated value <LABELMAP> for value 1 of attribute <Segmentation Type>",
    "Error - Value is zero for value 1 of attribute <Segment Number>",
    DCIODVFY_SEGMENT_ZERO,
    # a label map identifies segments by pixel value, not per frame (no Segmentation macro)
    "Error - Missing attribute Type 1 Required Element=<SegmentIdentificationSequence> Module=<SegmentationMacro>",
}
# Our private scheme "99AIW" (PS3.16 8: "99" prefix) is declared in the Coding Scheme
# Identification Sequence, but dciodvfy only knows registered designators: a warning.
PRIVATE_SCHEME_WARNING = ("Warning - Unrecognized defined term <99AIW> for value 1 of attribute "
                          "<Coding Scheme Designator>")


# --------------------------------------------------------------------------- fixtures

def lesion_output(study: synthetic.Study, volume: hd.Volume,
                  prior: tuple[synthetic.Study, hd.Volume] | None = None) -> ModelOutput:
    """What a lesion model reports: the truth, volumes by voxel counting, and changes."""
    labels = synthetic.truth_labels(study, volume).astype(np.uint8)
    voxel = float(volume.voxel_volume)
    counts = np.bincount(labels.ravel(), minlength=len(study.lesions) + 1)
    findings = [Finding(label=k, finding_type=LESION, description=f"White matter lesion {k}", site=BRAIN,
                        measurements=[Measurement(VOLUME, float(counts[k]) * voxel, MM3)])
                for k in range(1, len(study.lesions) + 1)]
    total = float(counts[1:].sum()) * voxel
    summary = [Measurement(NUMBER_OF_LESIONS, float(len(findings)), COUNT_UNIT),
               Measurement(TOTAL_LESION_VOLUME, total, MM3)]
    if prior is not None:
        prior_labels = synthetic.truth_labels(prior[0], prior[1])
        prior_total = float(np.count_nonzero(prior_labels)) * float(prior[1].voxel_volume)
        summary += [Measurement(CHANGE_IN_LESION_COUNT, float(len(findings) - len(prior[0].lesions)), COUNT_UNIT),
                    Measurement(CHANGE_IN_TOTAL_VOLUME, total - prior_total, MM3)]
    return ModelOutput(label_map=labels, findings=findings, summary=summary,
                       parameters={"threshold": 1.35, "min_size_mm3": 10.0})


@dataclass
class Case:
    """One encoded result with everything needed to check it."""

    study: synthetic.Study
    volume: hd.Volume
    output: ModelOutput
    results: Results
    prior: synthetic.Study | None = None

    @property
    def source(self) -> list[pydicom.Dataset]:
        return self.study.flair.datasets


def make_case(study: synthetic.Study, *, prior: synthetic.Study | None = None, **kw: object) -> Case:
    volume = hd.get_volume_from_series(study.flair.datasets)
    prior_volume = hd.get_volume_from_series(prior.flair.datasets) if prior else None
    output = lesion_output(study, volume, (prior, prior_volume) if prior else None)
    results = encode(study.flair.datasets, volume, output, ALGORITHM,
                     prior_source=prior.flair.datasets if prior else None, **kw)  # type: ignore[arg-type]
    return Case(study, volume, output, results, prior)


@pytest.fixture(scope="module")
def pair() -> tuple[synthetic.Study, synthetic.Study]:
    return synthetic.make_pair(7, shape=SHAPE, spacing=SPACING)


@pytest.fixture(scope="module")
def binary(pair) -> Case:
    current, prior = pair
    return make_case(current, prior=prior, institution_name="AIW Test Hospital")


@pytest.fixture(scope="module")
def labelmap(pair) -> Case:
    current, prior = pair
    return make_case(current, prior=prior, segmentation_type="LABELMAP")


@pytest.fixture(scope="module")
def no_prior(pair) -> Case:
    return make_case(pair[0])


@pytest.fixture(scope="module")
def oblique() -> Case:
    return make_case(synthetic.make_study(11, shape=SHAPE, spacing=SPACING, oblique=True))


@pytest.fixture(scope="module")
def empty(pair) -> Case:
    """A model that found nothing: no findings, the count says 0."""
    current, prior = pair
    volume = hd.get_volume_from_series(current.flair.datasets)
    output = ModelOutput(label_map=np.zeros(volume.spatial_shape, np.uint8), findings=[],
                         summary=[Measurement(NUMBER_OF_LESIONS, 0.0, COUNT_UNIT),
                                  Measurement(TOTAL_LESION_VOLUME, 0.0, MM3)])
    return Case(current, volume, output, encode(current.flair.datasets, volume, output, ALGORITHM))


def reread(ds: pydicom.Dataset) -> io.BytesIO:
    """The object as a receiver gets it: Part 10 bytes."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    buf.seek(0)
    return buf


def plane_index(volume: hd.Volume, ds: pydicom.Dataset) -> int:
    """The volume slice a source image lies on, from its own Image Position (Patient)."""
    index = volume.map_reference_to_indices(np.array([ds.ImagePositionPatient], dtype=float))[0]
    np.testing.assert_allclose(index, [round(index[0]), 0, 0], atol=1e-6)
    return int(round(index[0]))


# --------------------------------------------------------------------------- SEG

def check_seg_reads_back(case: Case) -> hd.seg.Segmentation:
    """A viewer's view of the SEG: segments and labels, and every voxel in place — both
    as a volume in the source geometry and frame by frame on the source images."""
    seg = hd.seg.segread(reread(case.results.seg))
    findings = case.output.findings
    assert seg.segment_numbers == [f.label for f in findings]
    described = {s.SegmentNumber: s for s in seg.SegmentSequence if s.SegmentNumber != 0}
    assert [described[f.label].SegmentLabel for f in findings] == [f"Lesion {f.label}" for f in findings]
    for f in findings:
        item = described[f.label]
        assert item.SegmentDescription == f.description
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == LESION.value
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value
        assert item.AnatomicRegionSequence[0].CodeValue == BRAIN.value
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algo = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == (ALGORITHM.name, ALGORITHM.version)
        assert algo.AlgorithmFamilyCodeSequence[0].CodeValue == ARTIFICIAL_INTELLIGENCE.value
        assert "threshold=1.35" in algo.AlgorithmParameters
        assert item.TrackingID == f"Lesion {f.label}"
    colours = [tuple(described[f.label].RecommendedDisplayCIELabValue) for f in findings]
    assert len(set(colours)) == len(colours), "segments must be told apart by colour"

    label_map = case.output.label_map
    volume = seg.get_volume(combine_segments=True)
    assert np.array_equal(volume.match_geometry(case.volume).array, label_map)

    # Frame by frame, as a viewer overlays a SEG: by the source image each frame references.
    uids = [ds.SOPInstanceUID for ds in case.source]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                               assert_missing_frames_are_empty=True)
    for ds, frame in zip(case.source, frames):
        assert np.array_equal(frame, label_map[plane_index(case.volume, ds)]), ds.InstanceNumber

    # Empty frames are omitted: one frame per (segment, slice) that holds the segment
    # (BINARY), one per slice with any label (LABELMAP).
    per_slice = [{int(v) for v in np.unique(label_map[k])} - {0} for k in range(label_map.shape[0])]
    expected = (sum(len(s) for s in per_slice) if seg.SegmentationType == "BINARY"
                else sum(1 for s in per_slice if s))
    assert seg.NumberOfFrames == expected
    return seg


def test_binary_seg_is_valid_and_reads_back_voxel_for_voxel(binary: Case) -> None:
    report = dciodvfy.validate(binary.results.seg)
    assert report.iod == "Segmentation"
    assert report.errors == [] and report.warnings == []
    seg = check_seg_reads_back(binary)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.SegmentationType == "BINARY"
    assert len(binary.output.findings) == len(binary.study.lesions) == 5


def test_labelmap_seg_is_valid_apart_from_dciodvfy_not_knowing_label_maps(labelmap: Case) -> None:
    seg_ds = labelmap.results.seg
    assert seg_ds.SOPClassUID == LABEL_MAP_SEGMENTATION_STORAGE
    report = dciodvfy.validate(seg_ds)
    assert report.errors == [DCIODVFY_SEGMENT_ZERO, DCIODVFY_UNKNOWN_IOD]
    # "IOD not found" means dciodvfy checked almost nothing; so check every module it does
    # know by presenting the object as a (binary) Segmentation, and allow only the
    # differences a label map has by definition.
    proxy = copy.deepcopy(seg_ds)
    proxy.SOPClassUID = proxy.file_meta.MediaStorageSOPClassUID = SEGMENTATION_STORAGE
    as_seg = dciodvfy.validate(proxy)
    assert as_seg.iod == "Segmentation"
    assert set(as_seg.errors) <= DCIODVFY_LABELMAP_AS_SEG, as_seg.errors
    assert as_seg.warnings == []

    seg = check_seg_reads_back(labelmap)
    assert seg.SegmentationType == "LABELMAP"
    background = seg.SegmentSequence[0]
    assert (background.SegmentNumber, background.SegmentLabel) == (0, "Background")


def test_oblique_study_seg_and_sr_are_valid_and_exact(oblique: Case) -> None:
    iop = [float(v) for v in oblique.source[0].ImageOrientationPatient]
    assert not np.allclose(np.abs(iop), [1, 0, 0, 0, 1, 0]), "the study must really be oblique"
    for ds in oblique.results.datasets():
        report = dciodvfy.validate(ds)
        assert report.errors == [], report
    seg = check_seg_reads_back(oblique)
    frame_iop = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(v) for v in frame_iop], iop, atol=1e-6)
    assert len(oblique.output.findings) == 5


def test_label_map_from_a_reoriented_volume_lands_on_the_source_slices(oblique: Case) -> None:
    """A model (or NIfTI adapter) may work in another orientation of the same grid; the
    SEG must still be in the source's slices, rows and columns."""
    moved = oblique.volume.with_array(oblique.output.label_map).permute_spatial_axes([2, 0, 1]).flip_spatial(0)
    output = copy.copy(oblique.output)
    output.label_map = np.ascontiguousarray(moved.array)
    results = encode(oblique.source, moved, output, ALGORITHM)
    seg = check_seg_reads_back(Case(oblique.study, oblique.volume, oblique.output, results))
    assert seg.Rows == oblique.source[0].Rows and seg.Columns == oblique.source[0].Columns


@pytest.mark.parametrize("shift", [0.5, 2.0], ids=["half-voxel", "two-voxels"])
def test_a_volume_off_the_source_grid_is_refused(binary: Case, shift: float) -> None:
    affine = binary.volume.affine.copy()
    affine[:3, 3] += shift * affine[:3, 2]  # along the rows, by `shift` voxels
    off = hd.Volume(binary.volume.array, affine, binary.volume.coordinate_system,
                    frame_of_reference_uid=binary.volume.frame_of_reference_uid)
    with pytest.raises(ValueError, match="source series' grid"):
        encode(binary.source, off, binary.output, ALGORITHM, prior_source=binary.prior.flair.datasets)


def test_frames_that_miss_the_source_images_are_refused(binary: Case) -> None:
    """With a slice missing the series is no regular grid; frames are matched by position
    alone, and a volume shifted half a slice must not produce a SEG floating between."""
    source = [ds for ds in binary.source if ds.InstanceNumber != 12]
    affine = binary.volume.affine.copy()
    affine[:3, 3] += 0.5 * affine[:3, 0]
    off = hd.Volume(binary.volume.array, affine, binary.volume.coordinate_system,
                    frame_of_reference_uid=binary.volume.frame_of_reference_uid)
    with pytest.raises(ValueError, match="does not coincide with a source image"):
        encode(source, off, binary.output, ALGORITHM, prior_source=binary.prior.flair.datasets)


# --------------------------------------------------------------------------- SR

def measurement_values(group) -> dict[str, tuple[float, str]]:
    return {m.name.value: (float(m.value), m.unit.value) for m in group.get_measurements()}


def check_sr_reads_back(case: Case) -> hd.sr.Comprehensive3DSR:
    sr = hd.sr.srread(reread(case.results.sr))
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR_STORAGE
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.PreliminaryFlag) == ("PARTIAL", "UNVERIFIED", "PRELIMINARY")
    assert "VerifyingObserverSequence" not in sr
    report = sr.content
    assert report[0].ContentTemplateSequence[0].TemplateIdentifier == "1500"

    # the AI is the observer, identified as a device
    observers = report.get_observer_contexts()
    assert len(observers) == 1 and observers[0].observer_type == codes.DCM.Device
    device = observers[0].observer_identifying_attributes
    assert (device.uid, device.name, device.manufacturer_name, device.model_name) == (
        ALGORITHM.device_uid, ALGORITHM.name, ALGORITHM.manufacturer, ALGORITHM.version)

    procedures = [item.value for item in report[0].ContentSequence if item.name == codes.DCM.ProcedureReported]
    assert [(p.value, p.scheme_designator) for p in procedures] == [(MRI_OF_BRAIN.value, "SCT")]

    # one volumetric group per finding, pointing at its segment; values and UCUM units intact
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(case.output.findings)
    seg = case.results.seg
    for group, finding in zip(groups, case.output.findings):
        assert group.tracking_identifier == f"Lesion {finding.label}"
        segment = next(s for s in seg.SegmentSequence if s.SegmentNumber == finding.label)
        assert group.tracking_uid == segment.TrackingUID
        assert group.finding_type.value == LESION.value
        assert [s.value.value for s in group.finding_sites] == [BRAIN.value]
        ref = group.referenced_segment[0]
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID
        assert ref.ReferencedSOPSequence[0].ReferencedSOPClassUID == seg.SOPClassUID
        assert ref.ReferencedSOPSequence[0].ReferencedSegmentNumber == finding.label
        assert group.referenced_segment[1].UID == case.source[0].SeriesInstanceUID
        assert measurement_values(group) == {m.name.value: (m.value, m.unit.value) for m in finding.measurements}

    summary = report.get_image_measurement_groups()
    assert [g.tracking_identifier for g in summary] == ["Study summary"]
    assert measurement_values(summary[0]) == {m.name.value: (m.value, m.unit.value) for m in case.output.summary}

    # evidence: the source series (and SEG) of this study; the prior under its own study
    current = {(s.SeriesInstanceUID, r.ReferencedSOPInstanceUID)
               for item in sr.CurrentRequestedProcedureEvidenceSequence
               for s in item.ReferencedSeriesSequence for r in s.ReferencedSOPSequence}
    expected = {(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in case.results.datasets()[:-1] + case.source}
    assert current == expected
    return sr


def test_sr_with_prior_is_valid_and_shows_what_it_was_compared_with(binary: Case) -> None:
    report = dciodvfy.validate(binary.results.sr)
    assert report.iod == "Comprehensive3DSR"
    assert report.errors == []
    assert set(report.warnings) == {PRIVATE_SCHEME_WARNING}
    sr = check_sr_reads_back(binary)
    (other,) = sr.PertinentOtherEvidenceSequence
    assert other.StudyInstanceUID == binary.prior.study_uid != binary.study.study_uid
    assert {r.ReferencedSOPInstanceUID for s in other.ReferencedSeriesSequence for r in s.ReferencedSOPSequence} \
        == {ds.SOPInstanceUID for ds in binary.prior.flair.datasets}
    summary = measurement_values(sr.content.get_image_measurement_groups()[0])
    assert summary[CHANGE_IN_LESION_COUNT.value] == (2.0, COUNT_UNIT.value)  # two new lesions
    assert summary[CHANGE_IN_TOTAL_VOLUME.value][0] > 0
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence] == ["99AIW"]
    assert sr.InstitutionName == binary.results.seg.InstitutionName == "AIW Test Hospital"


def test_sr_without_prior_has_no_other_evidence(no_prior: Case) -> None:
    report = dciodvfy.validate(no_prior.results.sr)
    assert report.errors == []
    sr = check_sr_reads_back(no_prior)
    assert "PertinentOtherEvidenceSequence" not in sr
    names = measurement_values(sr.content.get_image_measurement_groups()[0])
    assert set(names) == {NUMBER_OF_LESIONS.value, TOTAL_LESION_VOLUME.value}
    assert names[NUMBER_OF_LESIONS.value] == (5.0, COUNT_UNIT.value)


def test_sr_referencing_a_labelmap_seg(labelmap: Case) -> None:
    report = dciodvfy.validate(labelmap.results.sr)
    assert report.errors == [DCIODVFY_SR_SEGMENT_REF] * len(labelmap.output.findings)
    # Proof that the SOP Class is all it objects to: the same SR referencing Segmentation
    # Storage instead is clean.
    proxy = copy.deepcopy(labelmap.results.sr)
    replaced = 0

    def relabel(ds: pydicom.Dataset, elem: pydicom.DataElement) -> None:
        nonlocal replaced
        if elem.keyword == "ReferencedSOPClassUID" and elem.value == LABEL_MAP_SEGMENTATION_STORAGE:
            elem.value = SEGMENTATION_STORAGE
            replaced += 1

    proxy.walk(relabel)
    assert replaced == len(labelmap.output.findings) + 1  # the content items and the evidence
    assert dciodvfy.validate(proxy).errors == []
    check_sr_reads_back(labelmap)


def test_zero_findings_give_no_seg_and_an_sr_saying_zero(empty: Case) -> None:
    assert empty.results.seg is None
    assert empty.results.datasets() == [empty.results.sr]
    report = dciodvfy.validate(empty.results.sr)
    assert report.errors == [] and set(report.warnings) == {PRIVATE_SCHEME_WARNING}
    sr = hd.sr.srread(reread(empty.results.sr))
    assert sr.content.get_volumetric_roi_measurement_groups() == []
    (summary,) = sr.content.get_image_measurement_groups()
    assert measurement_values(summary)[NUMBER_OF_LESIONS.value] == (0.0, COUNT_UNIT.value)
    assert sr.CompletionFlag == "PARTIAL" and sr.VerificationFlag == "UNVERIFIED"


# --------------------------------------------------------------------------- identity

IDENTITY = ("StudyInstanceUID", "AccessionNumber", "PatientID", "IssuerOfPatientID", "PatientName",
            "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID", "ReferringPhysicianName")


def test_results_are_filed_in_the_current_study_with_issuers(binary: Case, empty: Case) -> None:
    src = binary.source[0]
    source_series = {ds.SeriesInstanceUID for ds in binary.source}
    objects = [*binary.results.datasets(), *empty.results.datasets()]
    for ds in objects:
        ds = pydicom.dcmread(reread(ds))
        for keyword in IDENTITY:
            assert ds[keyword].value == src[keyword].value, keyword
        assert ds.StudyInstanceUID == binary.study.study_uid
        assert ds.IssuerOfAccessionNumberSequence[0].LocalNamespaceEntityID == binary.study.accession_issuer
        assert ds.IssuerOfPatientID == binary.study.patient_id_issuer
        assert ds.SeriesInstanceUID not in source_series
        assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions, ds.DeviceUID) == (
            ALGORITHM.manufacturer, ALGORITHM.name, ALGORITHM.version, ALGORITHM.device_uid)
        assert ALGORITHM.name in ds.SeriesDescription
    seg, sr = binary.results.seg, binary.results.sr
    assert (seg.Modality, seg.SeriesNumber, sr.Modality, sr.SeriesNumber) == ("SEG", 901, "SR", 902)
    assert seg.SeriesInstanceUID != sr.SeriesInstanceUID
    assert len({ds.SOPInstanceUID for ds in objects}) == len(objects)


def test_finding_category_and_qualitative_evaluations(binary: Case) -> None:
    """A finding may name its category (else 'Morphologically Abnormal Structure') and
    carry coded evaluations; both reach the SEG and the SR."""
    anatomical = Code("91723000", "SCT", "Anatomical Structure")
    new_lesion = Qualitative(Code("AIW-0100", "99AIW", "New since prior"), Code("373066001", "SCT", "Yes"))
    enhancing = Code("AIW-0200", "99AIW", "Enhancing lesion")
    output = copy.deepcopy(binary.output)
    output.findings[0].qualitative = [Qualitative(FINDING_CATEGORY, anatomical), new_lesion]
    output.findings[1].finding_type = enhancing
    output.findings[2].measurements = [Measurement(VOLUME, 1000 / 3, MM3)]  # more digits than DS holds
    results = encode(binary.source, binary.volume, output, ALGORITHM, prior_source=binary.prior.flair.datasets)
    seg = results.seg
    assert seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == anatomical.value
    assert seg.SegmentSequence[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == \
        MORPHOLOGICALLY_ABNORMAL_STRUCTURE.value
    assert seg.SegmentSequence[1].SegmentLabel == "Enhancing lesion 2"
    # a private code in the SEG is declared there too
    assert [i.CodingSchemeDesignator for i in seg.CodingSchemeIdentificationSequence] == ["99AIW"]
    seg_report = dciodvfy.validate(seg)
    assert seg_report.errors == [] and set(seg_report.warnings) == {PRIVATE_SCHEME_WARNING}
    groups = hd.sr.srread(reread(results.sr)).content.get_volumetric_roi_measurement_groups()
    # the value survives exactly (Floating Point Value beside the 16-character Numeric Value)
    (third,) = groups[2].get_measurements()
    assert third.value == 1000 / 3
    assert third[0].MeasuredValueSequence[0].NumericValue == "333.333333333333"
    group = groups[0]
    assert group.finding_category.value == anatomical.value
    # (highdicom also lists the group's other coded items, e.g. the category, as evaluations)
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    assert evaluations["AIW-0100"] == "373066001"
    assert dciodvfy.validate(results.sr).errors == []


# --------------------------------------------------------------------------- refusals

def refuse(case: Case, match: str, *, output: ModelOutput | None = None, **kw: object) -> None:
    kw.setdefault("prior_source", case.prior.flair.datasets if case.prior else None)
    with pytest.raises(ValueError, match=match):
        encode(case.source, case.volume, output or case.output, ALGORITHM, **kw)  # type: ignore[arg-type]


def edited(case: Case, **changes: object) -> ModelOutput:
    output = copy.deepcopy(case.output)
    for name, value in changes.items():
        setattr(output, name, value)
    return output


def test_inconsistent_outputs_are_refused_with_the_field_named(binary: Case) -> None:
    lm = binary.output.label_map
    refuse(binary, r"label_map has shape \(24, 64, 63\)", output=edited(binary, label_map=lm[:, :, :63]))
    refuse(binary, "dtype float", output=edited(binary, label_map=lm.astype(float)))
    extra = lm.copy()
    extra[0, 0, 0] = 9
    refuse(binary, r"label\(s\) \[9\] without a Finding", output=edited(binary, label_map=extra))
    gone = lm.copy()
    gone[gone == 3] = 0
    refuse(binary, r"Finding label\(s\) \[3\] have no voxels", output=edited(binary, label_map=gone))
    refuse(binary, "must run 1..N", output=edited(binary, findings=binary.output.findings[1:]))
    bad_unit = edited(binary)
    bad_unit.findings[0].measurements = [Measurement(VOLUME, 1.0, Code("mm3", "99AIW", "cubic millimeter"))]
    refuse(binary, "units must be UCUM", output=bad_unit)
    refuse(binary, "no prior_source", prior_source=None)
    refuse(binary, "segmentation_type", segmentation_type="FRACTIONAL")
    nothing = ModelOutput(label_map=np.zeros_like(lm), findings=[])
    refuse(binary, "nothing to report", output=nothing)


def test_wrong_priors_and_sources_are_refused(binary: Case) -> None:
    other_patient = synthetic.make_study(99, shape=(16, 16, 8), lesions=[], study_date="20200101")
    refuse(binary, "PatientID", prior_source=other_patient.flair.datasets)
    # a "prior" newer than the current study: results must go to the most recent study
    newer = [copy.copy(ds) for ds in binary.prior.flair.datasets]
    for ds in newer:
        ds.StudyDate = "20991231"
    refuse(binary, "prior_source StudyDate 20991231 is after", prior_source=newer)
    mixed = [*binary.source[:-1], binary.prior.flair.datasets[0]]
    with pytest.raises(ValueError, match="differ in StudyInstanceUID"):
        encode(mixed, binary.volume, binary.output, ALGORITHM, prior_source=binary.prior.flair.datasets)


def test_algorithm_identity() -> None:
    class Model:
        name, version, manufacturer, device_uid = "Net", "3", "Vendor", "2.25.42"

    assert Algorithm.of(Model()) == Algorithm("Net", "3", "Vendor", "2.25.42")
    with pytest.raises(ValueError, match="device_uid"):
        Algorithm("Net", "3", "Vendor", "not-a-uid")
    with pytest.raises(ValueError, match="Algorithm.version"):
        Algorithm("Net", "", "Vendor", "2.25.42")
    with pytest.raises(TypeError, match="device_uid"):
        Algorithm.of(object())


# --------------------------------------------------------------------------- dciodvfy wrapper

def test_dciodvfy_reports_errors_by_path_and_by_dataset(binary: Case, tmp_path) -> None:
    broken = copy.deepcopy(binary.results.seg)
    del broken.SegmentSequence[0].SegmentLabel  # Type 1: what a viewer lists
    path = tmp_path / "broken.dcm"
    pydicom.dcmwrite(path, broken, enforce_file_format=True)
    by_path, by_dataset = dciodvfy.validate(path), dciodvfy.validate(broken)
    assert by_path == by_dataset
    assert not by_path.ok
    assert any("SegmentLabel" in e for e in by_path.errors), by_path.errors
    assert str(by_path).splitlines()[0] == f"Segmentation: {len(by_path.errors)} error(s), 0 warning(s)"


def test_dciodvfy_missing_binary_is_a_clear_error(monkeypatch, binary: Case) -> None:
    monkeypatch.setattr(dciodvfy, "BINARY", "dciodvfy-is-not-installed")
    with pytest.raises(dciodvfy.DciodvfyNotInstalled, match="dicom3tools"):
        dciodvfy.validate(binary.results.sr)
