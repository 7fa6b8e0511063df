"""The in-memory index of the store: study → series → instance, with the few attributes
QIDO-RS answers with, so a query never opens a file.

It is rebuilt at start from the files' headers (read up to the pixel data): the files are
the truth, the index is a cache of them. All changes happen on the event loop, one
instance at a time, after the file is in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pydicom

from ups_server.dicomweb.storage import InstanceUids


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class InstanceRecord:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    path: Path
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None


@dataclass
class SeriesRecord:
    uid: str
    modality: str = ""
    description: str = ""
    number: int | None = None
    instances: dict[str, InstanceRecord] = field(default_factory=dict)

    def sorted_instances(self) -> list[InstanceRecord]:
        return sorted(self.instances.values(),
                      key=lambda r: (r.instance_number is None, r.instance_number or 0, r.sop_instance_uid))


@dataclass
class StudyRecord:
    uid: str
    patient_id: str = ""
    patient_name: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    description: str = ""
    series: dict[str, SeriesRecord] = field(default_factory=dict)

    def sorted_series(self) -> list[SeriesRecord]:
        return sorted(self.series.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))

    @property
    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series.values())

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series.values() if s.modality})


class Index:
    def __init__(self) -> None:
        self.studies: dict[str, StudyRecord] = {}
        self._where: dict[str, tuple[str, str]] = {}  # SOP Instance UID → (study, series)

    def __len__(self) -> int:
        return len(self._where)

    def location(self, sop_instance_uid: str) -> tuple[str, str] | None:
        return self._where.get(sop_instance_uid)

    def add(self, ds: pydicom.Dataset, uids: InstanceUids, path: Path) -> None:
        """Record one stored instance; study and series attributes follow the latest
        instance stored (as an archive that updates on re-store does)."""
        study = self.studies.get(uids.study) or self.studies.setdefault(uids.study, StudyRecord(uids.study))
        study.patient_id = _text(ds, "PatientID")
        study.patient_name = _text(ds, "PatientName")
        study.accession_number = _text(ds, "AccessionNumber")
        study.study_date = _text(ds, "StudyDate")
        study.study_time = _text(ds, "StudyTime")
        study.study_id = _text(ds, "StudyID")
        study.description = _text(ds, "StudyDescription")
        series = study.series.get(uids.series) or study.series.setdefault(uids.series, SeriesRecord(uids.series))
        series.modality = _text(ds, "Modality")
        series.description = _text(ds, "SeriesDescription")
        series.number = _int(ds, "SeriesNumber")
        series.instances[uids.sop_instance] = InstanceRecord(
            uids.sop_class, uids.sop_instance, uids.transfer_syntax, path, _int(ds, "InstanceNumber"),
            _int(ds, "Rows"), _int(ds, "Columns"), _int(ds, "NumberOfFrames"))
        self._where[uids.sop_instance] = (uids.study, uids.series)

    def study(self, uid: str) -> StudyRecord | None:
        return self.studies.get(uid)

    def series(self, study: str, series: str) -> SeriesRecord | None:
        s = self.studies.get(study)
        return s.series.get(series) if s else None

    def instance(self, study: str, series: str, sop: str) -> InstanceRecord | None:
        s = self.series(study, series)
        return s.instances.get(sop) if s else None

    def instances(self, study: str, series: str | None = None) -> list[InstanceRecord]:
        """The instances of a study, or of one series, in retrieve order."""
        st = self.studies.get(study)
        if st is None:
            return []
        chosen: Iterable[SeriesRecord] = st.sorted_series() if series is None else (
            [st.series[series]] if series in st.series else [])
        return [i for s in chosen for i in s.sorted_instances()]
