"""The model plugin contract: volumes + parameters in; label map, measurements and
qualitative findings out.

A model never sees DICOM files, HTTP or the workitem: the worker builds
:class:`highdicom.Volume` objects (exact geometry, LPS patient coordinates) from the
retrieved series and encodes whatever :class:`ModelOutput` holds as SEG + TID 1500 SR.
That keeps a vendor's model a pure function we can test voxel by voxel, and lets one
encoder serve every model. Models are found through the ``aiw.models`` entry-point group
(see :mod:`performers.models.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence, runtime_checkable

import highdicom as hd
import numpy as np


@dataclass(frozen=True)
class Code:
    """A coded concept (value, scheme, meaning), as in a DICOM code sequence item.

    Codes longer than 16 characters belong in Long Code Value (PS3.3 8.8); encoders
    decide that, a model just states the code.
    """

    value: str
    scheme: str
    meaning: str
    scheme_version: str | None = None

    def coded(self) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(self.value, self.scheme, self.meaning, self.scheme_version)


# Codes the project uses in more than one module. SNOMED CT, UCUM and DICOM (DCM) where a
# standard code fits (MISSION: codes); "99AIW" is our private scheme for what has none.
MM3 = Code("mm3", "UCUM", "cubic millimeter")
COUNT_UNIT = Code("{lesions}", "UCUM", "lesions")
VOLUME = Code("118565006", "SCT", "Volume")
LESION = Code("52988006", "SCT", "Lesion")
BRAIN = Code("12738006", "SCT", "Brain")
NUMBER_OF_LESIONS = Code("246206008", "SCT", "Number of lesions")
TOTAL_LESION_VOLUME = Code("AIW-0001", "99AIW", "Total lesion volume")
CHANGE_IN_LESION_COUNT = Code("AIW-0002", "99AIW", "Change in number of lesions since prior")
CHANGE_IN_TOTAL_VOLUME = Code("AIW-0003", "99AIW", "Change in total lesion volume since prior")


@dataclass(frozen=True)
class InputSpec:
    """One input a model needs: ``role`` is "current" (the study results go into) or
    "prior"; a model that cannot run without an input says ``required=True``."""

    role: str
    modality: str
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Measurement:
    """A numeric result: concept, value and UCUM unit."""

    name: Code
    value: float
    unit: Code


@dataclass(frozen=True)
class Qualitative:
    """A coded result (concept = coded value), e.g. finding site = brain."""

    name: Code
    value: Code


@dataclass
class Finding:
    """One region of the label map (voxels == ``label``), e.g. one lesion.

    ``label`` values run 1..N without gaps; each becomes a SEG segment and a TID 1500
    measurement group that references it.
    """

    label: int
    finding_type: Code
    description: str
    site: Code | None = None
    measurements: list[Measurement] = field(default_factory=list)
    qualitative: list[Qualitative] = field(default_factory=list)


@dataclass
class ModelInput:
    """Volumes by role ("current", "prior") and the workitem's processing parameters,
    keyed by concept name meaning (or code value), values as given."""

    volumes: Mapping[str, hd.Volume]
    parameters: Mapping[str, str | float] = field(default_factory=dict)

    @property
    def current(self) -> hd.Volume:
        return self.volumes["current"]

    @property
    def prior(self) -> hd.Volume | None:
        return self.volumes.get("prior")


@dataclass
class ModelOutput:
    """What a model found in the current volume.

    ``label_map`` has the current volume's spatial shape (integer dtype; 0 is background).
    ``summary`` holds study-level measurements (count, total volume, changes since the
    prior); ``qualitative`` study-level coded statements. ``parameters`` echoes the
    parameters actually used (for the Performed Processing Parameters Sequence).
    """

    label_map: np.ndarray
    findings: list[Finding]
    summary: list[Measurement] = field(default_factory=list)
    qualitative: list[Qualitative] = field(default_factory=list)
    parameters: dict[str, str | float] = field(default_factory=dict)


class UnusableInput(Exception):
    """The inputs cannot be processed; the workitem ends CANCELED with CID 9300 ``reason``
    (110522 "Object Types not supported", 110523 "Object Set incomplete", 110531
    "Insufficient quality for interpretation")."""

    def __init__(self, reason: Code | str, text: str):
        super().__init__(text)
        self.reason = reason if isinstance(reason, Code) else DISCONTINUATION[reason]
        self.text = text


# CID 9300 (Procedure Discontinuation Reasons) codes the performer uses.
DISCONTINUATION: dict[str, Code] = {c.value: c for c in (
    Code("110513", "DCM", "Discontinued for unspecified reason"),
    Code("110501", "DCM", "Equipment failure"),
    Code("110522", "DCM", "Object Types not supported"),
    Code("110523", "DCM", "Object Set incomplete"),
    Code("110524", "DCM", "Media Failure"),
    Code("110528", "DCM", "Discontinued Procedure Step rescheduled"),
    Code("110531", "DCM", "Insufficient quality for interpretation"),
    Code("110500", "DCM", "Doctor canceled procedure"),
    Code("110533", "DCM", "Workitem expired"),
)}


@runtime_checkable
class Model(Protocol):
    """What a model plugin provides. ``workitem_code`` is the Scheduled Workitem Code it
    serves; ``device_uid`` identifies the algorithm as SR device observer."""

    name: str
    version: str
    manufacturer: str
    device_uid: str
    workitem_code: Code
    inputs: Sequence[InputSpec]

    def run(self, inputs: ModelInput) -> ModelOutput: ...
