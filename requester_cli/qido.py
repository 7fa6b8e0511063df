"""Reading a study from a DICOMweb origin (QIDO-RS, plus one WADO-RS metadata fallback).

The requester asks the PACS as little as possible, always scoped to one study:
  * one instance-level QIDO-RS query ``/studies/{uid}/instances``: every instance with
    its series and the patient/study attributes (a study-level answer has no instance
    UIDs, and the workitem must list them);
  * attributes an archive does not return for ``includefield`` are also sent as empty
    matching keys (universal matching, PS3.18 8.3.4.1) — Orthanc 1.10 answers those for
    tags outside its index (Issuer of Patient ID) but not for includefield;
  * sequences cannot be asked for that way, so when the answer lacks the Issuer of
    Accession Number Sequence, one WADO-RS metadata request of one instance of the same
    study reads it.
The prior study: one study-level QIDO query restricted to the Patient ID and its Issuer
(and modality), re-checked here, because matching on a PACS may be case-insensitive or
wildcard-aware.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import httpx

from upsrs import dicomjson as dj
from upsrs.http import HttpHolder

Dataset = dict[str, Any]

# What the workitem and the input rules need (includefield; PS3.18 Table 6.7.1-2a keywords)
STUDY_FIELDS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDate", "StudyTime",
                "StudyDescription", "RequestedProcedureID", "ReferringPhysicianName")
SERIES_FIELDS = ("Modality", "SeriesDescription", "SeriesNumber", "SOPClassUID", "SOPInstanceUID",
                 "SeriesInstanceUID")
EMPTY_KEYS = ("IssuerOfPatientID", "RequestedProcedureID")  # outside Orthanc's index: universal match


class PacsError(RuntimeError):
    """The DICOMweb origin could not answer; the message is one line for a person."""


class StudyNotFound(PacsError):
    pass


class Qido(HttpHolder):
    """``async with Qido("http://pacs/dicom-web") as q: ...`` — ``base`` is the DICOMweb
    service root (the URL before ``/studies``)."""

    def __init__(self, base: str, *, timeout: float = 30.0, http: httpx.AsyncClient | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(http=http, timeout=timeout, headers=headers)
        self.base = base.rstrip("/")

    async def _get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> list[Dataset]:
        url = f"{self.base}{path}"
        try:
            resp = await self.http.get(url, params=list(params), headers={"accept": "application/dicom+json"})
        except httpx.TimeoutException:
            raise PacsError(f"PACS {self.base} did not answer in time ({url})") from None
        except httpx.HTTPError as exc:
            raise PacsError(f"PACS {self.base} is unreachable: {exc.__class__.__name__}: {exc}".strip()) from None
        if resp.status_code == 204 or (resp.status_code == 404 and "/studies/" in path):
            return []
        if resp.status_code != 200:
            raise PacsError(f"PACS {self.base} refused {path} with HTTP {resp.status_code}: "
                            f"{resp.text.strip()[:160] or resp.reason_phrase}")
        if not resp.content.strip():
            return []
        try:
            payload = resp.json()
        except ValueError:
            raise PacsError(f"PACS {self.base} answered {path} with something that is not DICOM JSON") from None
        if not isinstance(payload, list) or not all(isinstance(x, dict) for x in payload):
            raise PacsError(f"PACS {self.base} answered {path} with JSON that is not a list of datasets")
        return payload

    async def study_instances(self, study_uid: str, extra: Iterable[str] = ()) -> list[Dataset]:
        """Every instance of the study with patient/study/series attributes (and the
        keywords in ``extra``, e.g. those STAT rules look at)."""
        extra = tuple(dict.fromkeys(extra))
        fields = ",".join(dict.fromkeys((*STUDY_FIELDS, *SERIES_FIELDS, *extra)))
        empty = [(k, "") for k in dict.fromkeys((*EMPTY_KEYS, *extra))]
        found = await self._get(f"/studies/{study_uid}/instances", [*empty, ("includefield", fields)])
        found = [ds for ds in found if dj.first(ds, 0x0020000D) in (None, study_uid)]
        if not found:
            raise StudyNotFound(f"study {study_uid} is not on PACS {self.base}")
        return found

    async def instance_metadata(self, study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
        found = await self._get(f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}/metadata")
        if not found:
            raise StudyNotFound(f"instance {sop_uid} of study {study_uid} is not on PACS {self.base}")
        return found[0]

    async def patient_studies(self, patient_id: str, issuer: str, modality: str) -> list[Dataset]:
        """Studies of one patient (Patient ID + Issuer) holding ``modality``: ONE query,
        restricted to that patient; exact identity re-checked on the answer."""
        params = [("PatientID", patient_id), ("IssuerOfPatientID", issuer), ("ModalitiesInStudy", modality),
                  ("includefield", "StudyDate,StudyTime,ModalitiesInStudy,IssuerOfPatientID,AccessionNumber")]
        out = []
        for ds in await self._get("/studies", params):
            if dj.first(ds, 0x00100020) != patient_id:
                continue
            got_issuer = dj.first(ds, 0x00100021)
            if got_issuer is not None and got_issuer != issuer:
                continue
            out.append(ds)
        return out

    async def studies(self, params: Sequence[tuple[str, str]]) -> list[Dataset]:
        """A study-level query (the DICOMweb poller's)."""
        return await self._get("/studies", params)
