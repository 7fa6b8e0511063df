"""Encode a :class:`~performers.models.base.ModelOutput` as the DICOM objects a PACS
stores and a viewer shows: a Segmentation (one segment per finding) and a TID 1500
Measurement Report (Comprehensive 3D SR) whose measurement groups point at those segments.

Why one encoder for every model: the hard parts are the same for all of them and are
easy to get subtly wrong — the label map must land on exactly the source slices (a voxel
off puts a lesion in the wrong place), both objects must sit in the current study with
every identifier a PACS links on (accession and patient ID *with their issuers*), the AI
must appear as the device that authored the report, and the report must say plainly that
nobody has verified it yet.

Choices a reader of the objects will notice:

- The SEG is built from an :class:`highdicom.Volume` (the label map with the source
  volume's affine), so highdicom derives every frame's position and source-image
  reference from geometry; :func:`encode` then refuses a SEG in which any frame failed to
  land on a source image. Empty frames are omitted.
- A finding's segment label is "<finding type> <label>" (e.g. "Lesion 3"); the same text
  is its SR tracking identifier and the SEG Tracking ID, and both share one Tracking UID,
  so a viewer can go from a segment to its measurements and back.
- Segmented Property Category: a finding's qualitative item named
  :data:`FINDING_CATEGORY` if it has one, else "Morphologically Abnormal Structure".
- Study-level values (lesion count, total volume, changes since the prior) go into one
  TID 1501 "Measurement Group" tracked as "Study summary": TID 1500 offers measurement
  groups without an ROI exactly for values that belong to no single region, and viewers
  that list TID 1500 groups (OHIF and most PACS SR renderers) show them as a row.
- Preliminary: Completion Flag PARTIAL, Verification Flag UNVERIFIED, Preliminary Flag
  PRELIMINARY — the SR IOD allows all three, and a PACS shows them.
- Zero findings: a Segmentation must have at least one segment, so there is no SEG at
  all (:attr:`Results.seg` is ``None``); the SR alone states the result (e.g. "Number of
  lesions = 0" from the model's summary).
- Prior comparison: the prior study's instances are listed in the SR's Pertinent Other
  Evidence Sequence so a reader can see what the changes were measured against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import RE_VALID_UID

from performers import iod_lookup
from performers.models.base import (
    CHANGE_IN_LESION_COUNT,
    CHANGE_IN_TOTAL_VOLUME,
    Code,
    Finding,
    Measurement,
    ModelOutput,
    Qualitative,
)

iod_lookup.install()  # highdicom's per-image IOD table walks, answered once (see the module)

# "MRI of brain" (SNOMED CT 816077007): the procedure the report's measurements come from.
MRI_OF_BRAIN = Code("816077007", "SCT", "Magnetic resonance imaging of brain")
# TID 1501 "Finding category" (SNOMED CT 276214006). A model that puts a Qualitative with
# this name on a finding sets the segment's Segmented Property Category (CID 7150) with it.
FINDING_CATEGORY = Code("276214006", "SCT", "Finding category")
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically Abnormal Structure")
# CID 7162 algorithm family of every segment we write.
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")

SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
SUMMARY_TRACKING_IDENTIFIER = "Study summary"

# Names of the private coding schemes we define (PS3.3 C.12.1.1.2 wants private schemes
# identified in the Coding Scheme Identification Sequence).
_PRIVATE_SCHEME_NAMES = {"99AIW": "aiw private codes"}

# Study-level identity a PACS links results on (MISSION: carry Study Instance UID,
# accession and patient ID with their issuers on every result). highdicom copies these
# today; we copy them explicitly so a change there cannot silently drop an issuer.
_STUDY_IDENTITY = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "ReferringPhysicianName",
    "StudyDescription",
)

# Distinct display colours (RGB) for segments, cycled; a viewer shows them as given.
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)


@dataclass(frozen=True)
class Algorithm:
    """The AI as author of the results: SEG equipment and segment algorithm
    identification, and the SR's device observer (name, manufacturer, model name =
    version, Device Observer UID)."""

    name: str
    version: str
    manufacturer: str
    device_uid: str

    def __post_init__(self) -> None:
        for field_name in ("name", "version", "manufacturer"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Algorithm.{field_name} must be a non-empty string, got {value!r}")
            if len(value) > 64:
                raise ValueError(f"Algorithm.{field_name} {value!r} is longer than 64 characters "
                                 "(LO: Manufacturer, Algorithm Name/Version, Device Observer Name)")
        if not (isinstance(self.device_uid, str) and len(self.device_uid) <= 64
                and RE_VALID_UID.match(self.device_uid)):
            raise ValueError(f"Algorithm.device_uid {self.device_uid!r} is not a valid DICOM UID "
                             "(Device Observer UID (121012, DCM))")

    @classmethod
    def of(cls, model: object) -> "Algorithm":
        """The algorithm identity of a :class:`~performers.models.base.Model`."""
        missing = [a for a in ("name", "version", "manufacturer", "device_uid") if not hasattr(model, a)]
        if missing:
            raise TypeError(f"{type(model).__name__} lacks Model attribute(s) {missing}")
        return cls(str(model.name), str(model.version), str(model.manufacturer),  # type: ignore[attr-defined]
                   str(model.device_uid))  # type: ignore[attr-defined]

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


@dataclass
class Results:
    """The objects to store, in store order (the SR references the SEG).

    ``seg`` is ``None`` when the model reported no findings: a Segmentation cannot have
    zero segments, and the SR alone then carries the (empty) result.
    """

    seg: pydicom.Dataset | None
    sr: pydicom.Dataset

    def datasets(self) -> list[pydicom.Dataset]:
        return [ds for ds in (self.seg, self.sr) if ds is not None]


def encode(source: Sequence[pydicom.Dataset], volume: hd.Volume, output: ModelOutput,
           algorithm: Algorithm, *, segmentation_type: str = "BINARY",
           prior_source: Sequence[pydicom.Dataset] | None = None,
           series_number_seg: int = 901, series_number_sr: int = 902,
           institution_name: str | None = None,
           procedure_reported: Code = MRI_OF_BRAIN) -> Results:
    """SEG + TID 1500 SR for ``output``, computed by ``algorithm`` on ``volume`` (built
    from the ``source`` series), stored into the source study.

    ``prior_source``: the prior study's series the model compared against; required when
    the summary states changes since the prior. Raises :class:`ValueError` naming the
    field or attribute when the inputs are inconsistent.
    """
    segmentation_type = segmentation_type.upper()
    if segmentation_type not in SEGMENTATION_TYPES:
        raise ValueError(f"segmentation_type must be one of {SEGMENTATION_TYPES}, got {segmentation_type!r}")
    _check_source(source)
    _check_prior(source, prior_source)
    findings = sorted(output.findings, key=lambda f: f.label)
    _check_output(output, findings, volume, prior_source)

    tracking_uids = {f.label: hd.UID() for f in findings}
    seg = None
    if findings:
        seg = _segmentation(source, volume, output, findings, algorithm, tracking_uids,
                            segmentation_type=segmentation_type, series_number=series_number_seg,
                            institution_name=institution_name)
    sr = _report(source, output, findings, algorithm, tracking_uids, seg, prior_source=prior_source,
                 series_number=series_number_sr, institution_name=institution_name,
                 procedure_reported=procedure_reported)
    return Results(seg=seg, sr=sr)


# --------------------------------------------------------------------------- checks

def _check_source(source: Sequence[pydicom.Dataset]) -> None:
    if not source:
        raise ValueError("source is empty: the series the volume was built from is needed")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(keyword, "")) for ds in source}
        if "" in values:
            raise ValueError(f"a source instance lacks {keyword}")
        if len(values) > 1:
            raise ValueError(f"source instances differ in {keyword} ({sorted(values)}): pass one series")


def _check_prior(source: Sequence[pydicom.Dataset], prior: Sequence[pydicom.Dataset] | None) -> None:
    """The prior must be the same patient and not newer: results go to the most recent
    study, and comparing against another patient's images would be a silent disaster."""
    if prior is None:
        return
    if not prior:
        raise ValueError("prior_source is empty; pass None when the model did not compare")
    current = source[0]
    for ds in prior:
        for keyword in ("PatientID", "IssuerOfPatientID"):
            if keyword in current and keyword in ds and str(ds.get(keyword)) != str(current.get(keyword)):
                raise ValueError(f"prior_source {keyword} {ds.get(keyword)!r} differs from the current "
                                 f"study's {current.get(keyword)!r}: a prior must be the same patient")
        if ds.get("StudyDate") and current.get("StudyDate") and ds.StudyDate > current.StudyDate:
            raise ValueError(f"prior_source StudyDate {ds.StudyDate} is after the current StudyDate "
                             f"{current.StudyDate}: results belong to the most recent study")


def _check_output(output: ModelOutput, findings: list[Finding], volume: hd.Volume,
                  prior: Sequence[pydicom.Dataset] | None) -> None:
    label_map = np.asarray(output.label_map)
    if tuple(label_map.shape) != tuple(volume.spatial_shape):
        raise ValueError(f"ModelOutput.label_map has shape {label_map.shape}, the volume's spatial shape "
                         f"is {tuple(volume.spatial_shape)}: the label map must be in the volume's voxel grid")
    if not (np.issubdtype(label_map.dtype, np.integer) or label_map.dtype == np.bool_):
        raise ValueError(f"ModelOutput.label_map has dtype {label_map.dtype}; an integer label map is required")
    labels = [f.label for f in findings]
    if labels != list(range(1, len(labels) + 1)):
        raise ValueError(f"Finding labels {labels} must run 1..N without gaps or repeats (segment numbers)")
    if label_map.size and label_map.min() < 0:
        raise ValueError("ModelOutput.label_map has negative values")
    if len(labels) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(labels)} findings: a Segmentation holds at most 65535 segments")
    flat = label_map.ravel()
    if flat.dtype == np.bool_:
        flat = flat.view(np.uint8)
    elif flat.dtype.itemsize == 8:  # (u)int64: bincount cannot take uint64 as is
        flat = flat.astype(np.int64, copy=False)
    counts = np.bincount(flat, minlength=len(labels) + 1)  # no copy for the usual 8-32 bit maps
    extra = [int(v) for v in np.nonzero(counts[len(labels) + 1:])[0] + len(labels) + 1]
    if extra:
        raise ValueError(f"ModelOutput.label_map contains label(s) {extra[:10]} without a Finding")
    empty = [k for k in labels if counts[k] == 0]
    if empty:
        raise ValueError(f"Finding label(s) {empty} have no voxels in ModelOutput.label_map: "
                         "a segment must show where its finding is")
    for owner, measurements in [("summary", output.summary)] + [
            (f"Finding {f.label}", f.measurements) for f in findings]:
        for m in measurements:
            if m.unit.scheme != "UCUM":
                raise ValueError(f"{owner} measurement {m.name.meaning!r} has unit {m.unit.value!r} in scheme "
                                 f"{m.unit.scheme!r}; units must be UCUM")
            if not np.isfinite(m.value):
                raise ValueError(f"{owner} measurement {m.name.meaning!r} has non-finite value {m.value}")
    if prior is None:
        changes = [m.name.meaning for m in output.summary
                   if m.name in (CHANGE_IN_LESION_COUNT, CHANGE_IN_TOTAL_VOLUME)]
        if changes:
            raise ValueError(f"summary states {changes} but no prior_source was given: the report must "
                             "reference the prior the changes were measured against")
    if not findings and not output.summary and not output.qualitative:
        raise ValueError("ModelOutput has no findings, no summary and no qualitative results: nothing to "
                         "report (a model that found nothing states it, e.g. Number of lesions = 0)")


# --------------------------------------------------------------------------- SEG

def _category(finding: Finding) -> Code:
    for q in finding.qualitative:
        if q.name == FINDING_CATEGORY:
            return q.value
    return MORPHOLOGICALLY_ABNORMAL_STRUCTURE


def _segment_label(finding: Finding) -> str:
    suffix = f" {finding.label}"
    return finding.finding_type.meaning[:64 - len(suffix)] + suffix


def _algorithm_parameters(output: ModelOutput) -> dict[str, str]:
    return {str(k): str(v) for k, v in output.parameters.items()}


def _segment_description(finding: Finding, algorithm: Algorithm, output: ModelOutput,
                         tracking_uid: str) -> hd.seg.SegmentDescription:
    label = _segment_label(finding)
    r, g, b = _PALETTE[(finding.label - 1) % len(_PALETTE)]
    desc = hd.seg.SegmentDescription(
        segment_number=finding.label,
        segment_label=label,
        segmented_property_category=_category(finding).coded(),
        segmented_property_type=finding.finding_type.coded(),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name, family=ARTIFICIAL_INTELLIGENCE.coded(), version=algorithm.version,
            source=algorithm.manufacturer, parameters=_algorithm_parameters(output) or None),
        tracking_uid=tracking_uid,
        tracking_id=label,
        anatomic_regions=[finding.site.coded()] if finding.site else None,
        display_color=hd.color.CIELabColor.from_rgb(r, g, b),
    )
    if finding.description:
        desc.SegmentDescription = finding.description  # (0062,0006) ST: the model's words
    return desc


def _segmentation(source: Sequence[pydicom.Dataset], volume: hd.Volume, output: ModelOutput,
                  findings: list[Finding], algorithm: Algorithm, tracking_uids: dict[int, str], *,
                  segmentation_type: str, series_number: int,
                  institution_name: str | None) -> hd.seg.Segmentation:
    label_map = np.asarray(output.label_map)
    dtype = np.uint8 if len(findings) <= np.iinfo(np.uint8).max else np.uint16
    labels = _on_source_grid(volume.with_array(label_map.astype(dtype, copy=False)), source)
    seg = hd.seg.Segmentation(
        source_images=list(source),
        pixel_array=_frames_by_source(labels, source),
        segmentation_type=segmentation_type,
        segment_descriptions=[_segment_description(f, algorithm, output, tracking_uids[f.label])
                              for f in findings],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number=algorithm.device_uid,
        content_label="AI_SEG",
        content_description=_lo(f"{algorithm.label} (AI, unverified)"),
        omit_empty_frames=True,
        series_description=_lo(f"AI SEG {algorithm.label}"),
        institution_name=institution_name,
        coding_schemes=_private_schemes(_segment_codes(findings)),
    )
    seg.DeviceUID = algorithm.device_uid
    _copy_study_identity(seg, source[0])
    _require_source_correspondence(seg)
    return seg


def _source_grid(source: Sequence[pydicom.Dataset]) -> hd.VolumeGeometry | None:
    """The voxel grid of the source series as highdicom's volume convention builds it
    (slices down axis 0), from geometry attributes alone; ``None`` when the series is
    not a regularly spaced volume."""
    if len(source) == 1:
        first, spacing = source[0], float(source[0].get("SpacingBetweenSlices", 1.0))
    else:
        spacing, positions = hd.spatial.get_series_volume_positions(source)
        if spacing is None or positions is None:
            return None
        first = source[positions.index(0)]
    try:
        return hd.VolumeGeometry.from_attributes(
            image_position=first.ImagePositionPatient, image_orientation=first.ImageOrientationPatient,
            rows=int(first.Rows), columns=int(first.Columns), pixel_spacing=first.PixelSpacing,
            spacing_between_slices=spacing, number_of_frames=len(source), coordinate_system="PATIENT",
            frame_of_reference_uid=first.FrameOfReferenceUID)
    except AttributeError as exc:
        raise ValueError(f"source instance {first.SOPInstanceUID} lacks an Image Plane attribute: {exc}") from exc


def _frames_by_source(labels: hd.Volume, source: Sequence[pydicom.Dataset]) -> hd.Volume | np.ndarray:
    """The label map as one frame per source image, in the order of ``source``, when the
    volume has exactly one slice on each source image: highdicom then takes each frame's
    position from its source image (~0.2 s for 160 frames) instead of matching planes of a
    volume against them (~1.1 s). Any other case keeps the volume, which highdicom maps."""
    inverse = labels.inverse_affine
    index = []
    for ds in source:
        at = inverse @ np.array([*map(float, ds.ImagePositionPatient), 1.0])
        k = int(round(float(at[0])))
        if abs(at[0] - k) > 1e-3 or abs(at[1]) > 1e-3 or abs(at[2]) > 1e-3:
            return labels  # not on the grid's slice origins: let highdicom decide
        index.append(k)
    if sorted(index) != list(range(labels.spatial_shape[0])):
        return labels
    return labels.array[index]


def _on_source_grid(labels: hd.Volume, source: Sequence[pydicom.Dataset]) -> hd.Volume:
    """``labels`` permuted/flipped onto the source grid, so that every SEG frame lies on
    (and references) a source image in the source's row/column order — whatever
    orientation the model worked in (e.g. a volume reoriented to LPS or from NIfTI).
    Never resamples: a grid that is not a re-indexing of the source's is an error."""
    grid = _source_grid(source)
    if grid is None:
        return labels  # irregular series: frames are matched by position alone, checked below
    try:
        matched = labels.match_geometry(grid)
    except RuntimeError as exc:
        raise ValueError(f"the volume's voxel grid (affine {np.round(labels.affine, 4).tolist()}) is not the "
                         f"source series' grid, nor a permutation or flip of it: {exc}") from exc
    # match_geometry also pads and crops (shifted grids); labels cut off would be lost
    # without a word, and highdicom 0.28 can return the padded shape uncropped.
    if (not matched.geometry_equal(grid)
            or np.count_nonzero(matched.array) != np.count_nonzero(labels.array)):
        raise ValueError("the volume's voxel grid is shifted against the source series' grid by whole "
                         "voxels: pass the label map in the grid of the volume built from the source")
    return matched


def _require_source_correspondence(seg: pydicom.Dataset) -> None:
    """Every frame must reference the source image it lies on (highdicom sets that only
    when the plane coincides with a source image within 1 µm): a frame that does not is
    a label map in some other grid, and a viewer would draw it off the anatomy."""
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        derivation = item.get("DerivationImageSequence") or []
        sources = derivation[0].get("SourceImageSequence") if derivation else None
        if not sources or sources[0].get("SpatialLocationsPreserved") != "YES":
            position = item.PlanePositionSequence[0].ImagePositionPatient
            raise ValueError(f"SEG frame {number} at ImagePositionPatient {list(position)} does not coincide "
                             "with a source image: the volume is not the source series' voxel grid")


# --------------------------------------------------------------------------- SR

def _measurements(measurements: Iterable[Measurement]) -> list[hd.sr.Measurement]:
    return [hd.sr.Measurement(name=m.name.coded(), value=float(m.value), unit=m.unit.coded())
            for m in measurements]


def _evaluations(qualitative: Iterable[Qualitative]) -> list[hd.sr.QualitativeEvaluation]:
    return [hd.sr.QualitativeEvaluation(name=q.name.coded(), value=q.value.coded())
            for q in qualitative if q.name != FINDING_CATEGORY]


def _report(source: Sequence[pydicom.Dataset], output: ModelOutput, findings: list[Finding],
            algorithm: Algorithm, tracking_uids: dict[int, str], seg: pydicom.Dataset | None, *,
            prior_source: Sequence[pydicom.Dataset] | None, series_number: int,
            institution_name: str | None, procedure_reported: Code) -> hd.sr.Comprehensive3DSR:
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in _algorithm_parameters(output).items()] or None,
        family=ARTIFICIAL_INTELLIGENCE.coded(), manufacturer=algorithm.manufacturer)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=algorithm.device_uid, name=algorithm.name, manufacturer_name=algorithm.manufacturer,
            model_name=algorithm.version))
    series_uid = source[0].SeriesInstanceUID
    groups: list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
                 | hd.sr.MeasurementsAndQualitativeEvaluations] = []
    for f in findings:
        assert seg is not None  # findings imply a SEG
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uids[f.label],
                                                         identifier=_segment_label(f)),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=f.label,
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid)),
            finding_type=f.finding_type.coded(),
            finding_category=_category(f).coded(),
            algorithm_id=algorithm_id,
            finding_sites=[hd.sr.FindingSite(f.site.coded())] if f.site else None,
            measurements=_measurements(f.measurements) or None,
            qualitative_evaluations=_evaluations(f.qualitative) or None,
        ))
    if output.summary or output.qualitative:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=SUMMARY_TRACKING_IDENTIFIER),
            algorithm_id=algorithm_id,
            measurements=_measurements(output.summary) or None,
            qualitative_evaluations=_evaluations(output.qualitative) or None,
        ))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=procedure_reported.coded(),
        imaging_measurements=groups,
    )
    evidence = [*source, *([seg] if seg is not None else []), *(prior_source or [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        is_complete=False,   # Completion Flag PARTIAL
        is_verified=False,   # Verification Flag UNVERIFIED
        is_final=False,      # Preliminary Flag PRELIMINARY
        institution_name=institution_name,
        record_evidence=True,  # prior instances -> Pertinent Other Evidence Sequence
        manufacturer_model_name=algorithm.name,
        software_versions=algorithm.version,
        device_serial_number=algorithm.device_uid,
        series_description=_lo(f"AI SR {algorithm.label} (unverified)"),
        coding_schemes=_private_schemes(_report_codes(output, findings)),
    )
    sr.DeviceUID = algorithm.device_uid
    _copy_study_identity(sr, source[0])
    return sr


def _segment_codes(findings: Iterable[Finding]) -> list[Code | None]:
    return [c for f in findings for c in (f.finding_type, f.site, _category(f))]


def _report_codes(output: ModelOutput, findings: list[Finding]) -> list[Code | None]:
    measurements = [*output.summary, *(m for f in findings for m in f.measurements)]
    qualitative = [*output.qualitative, *(q for f in findings for q in f.qualitative)]
    return [*_segment_codes(findings), *(c for m in measurements for c in (m.name, m.unit)),
            *(c for q in qualitative for c in (q.name, q.value))]


def _private_schemes(used: Iterable[Code | None]) -> list[hd.coding_schemes.CodingSchemeIdentificationItem] | None:
    """Coding Scheme Identification items for the private ("99...") schemes among
    ``used`` (PS3.3 C.12.1.1.2: an object declares the private schemes it uses)."""
    schemes = sorted({c.scheme for c in used if c is not None and c.scheme.startswith("99")})
    return [hd.coding_schemes.CodingSchemeIdentificationItem(s, name=_PRIVATE_SCHEME_NAMES.get(s))
            for s in schemes] or None


# --------------------------------------------------------------------------- shared

def _copy_study_identity(target: pydicom.Dataset, source: pydicom.Dataset) -> None:
    for keyword in _STUDY_IDENTITY:
        if keyword in source:
            setattr(target, keyword, copy.deepcopy(source[keyword].value))


def _lo(text: str) -> str:
    """Fit a Long String (64 characters)."""
    return text if len(text) <= 64 else text[:61] + "..."


__all__ = ["Algorithm", "Results", "encode", "MRI_OF_BRAIN", "FINDING_CATEGORY",
           "MORPHOLOGICALLY_ABNORMAL_STRUCTURE", "ARTIFICIAL_INTELLIGENCE", "SEGMENTATION_TYPES"]
