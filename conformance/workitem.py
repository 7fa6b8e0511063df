"""Builders for valid UPS workitems and for the datasets of the later transactions.

``new_workitem`` returns a minimal-but-complete N-CREATE dataset: every type 1 and type 2
attribute of PS3.4 Table CC.2.5-3 is present (spec §3.3), so a conformant server has no
reason to refuse it and no reason to coerce anything but what the test asks for.
"""

from __future__ import annotations

import datetime as _dt

from . import tags
from .dicomjson import Dataset, code, dicom_datetime, elem, new_uid, pn, sq, token

CONFORMANCE_SCHEME = "99AIWCONF"
DEFAULT_WORKITEM_CODE = ("110004", "DCM", "Computer Aided Detection")
STATION_CODE = ("AIWCONF_NODE", CONFORMANCE_SCHEME, "Conformance test node")


def _input_item(study_uid: str) -> Dataset:
    """One Input Information Sequence item with a WADO-RS Retrieval Sequence (CC.2.5-2c)."""
    series_uid = new_uid()
    return {
        tags.REFERENCED_SOP_SEQ: sq({
            tags.REFERENCED_SOP_CLASS_UID: elem("UI", tags.CT_IMAGE_STORAGE),
            tags.REFERENCED_SOP_INSTANCE_UID: elem("UI", new_uid()),
        }),
        tags.STUDY_INSTANCE_UID: elem("UI", study_uid),
        tags.SERIES_INSTANCE_UID: elem("UI", series_uid),
        tags.TYPE_OF_INSTANCES: elem("CS", "DICOM"),
        tags.WADO_RS_RETRIEVAL_SEQ: sq({
            tags.RETRIEVE_URL: elem(
                "UR", f"https://pacs.example.org/dicom-web/studies/{study_uid}/series/{series_uid}"
            ),
        }),
    }


def _processing_parameter() -> Dataset:
    """One Scheduled Processing Parameters item (UPS Content Item Macro, TEXT)."""
    return {
        tags.VALUE_TYPE: elem("CS", "TEXT"),
        tags.CONCEPT_NAME_CODE_SEQ: sq(code("AIWPARAM", CONFORMANCE_SCHEME, "Conformance parameter")),
        tags.TEXT_VALUE: elem("UT", "threshold=0.5"),
    }


def new_workitem(
    *,
    worklist_label: str | None = "AIW-CONFORMANCE",
    procedure_step_label: str | None = None,
    patient_id: str | None = None,
    patient_name: str | None = "CONFORMANCE^TEST",
    priority: str = "MEDIUM",
    readiness: str = "READY",
    start: str | None = None,
    workitem_code: tuple[str, str, str] = DEFAULT_WORKITEM_CODE,
    accession: str | None = None,
    birth_date: str = "19700101",
) -> Dataset:
    """A complete N-CREATE dataset in SCHEDULED state with an empty Transaction UID.

    ``worklist_label=None`` sends Worklist Label present-but-empty (type 2/1: the SCP must
    then fill it). Unique defaults keep tests independent on a shared server.
    """
    study_uid = new_uid()
    start = start or dicom_datetime(_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(hours=1))
    return {
        tags.TRANSACTION_UID: elem("UI"),
        tags.ADMITTING_DIAGNOSES_DESCRIPTION: elem("LO", "None"),
        tags.ADMITTING_DIAGNOSES_CODE_SEQ: sq(),
        tags.PATIENT_NAME: pn(patient_name),
        tags.PATIENT_ID: elem("LO", patient_id or token("PID")),
        tags.ISSUER_OF_PATIENT_ID: elem("LO", "AIWCONF"),
        tags.ISSUER_OF_PATIENT_ID_QUALIFIERS_SEQ: sq(),
        tags.PATIENT_BIRTH_DATE: elem("DA", birth_date),
        tags.PATIENT_SEX: elem("CS", "O"),
        tags.OTHER_PATIENT_IDS_SEQ: sq(),
        tags.STUDY_INSTANCE_UID: elem("UI", study_uid),
        tags.ADMISSION_ID: elem("LO", token("ADM")),
        tags.ISSUER_OF_ADMISSION_ID_SEQ: sq(),
        tags.COMMENTS_ON_SPS: elem("LT", "Created by the aiw UPS-RS conformance suite"),
        tags.START_DATETIME: elem("DT", start),
        tags.INPUT_READINESS_STATE: elem("CS", readiness),
        tags.SCHEDULED_WORKITEM_CODE_SEQ: sq(code(*workitem_code)),
        tags.INPUT_INFORMATION_SEQ: sq(_input_item(study_uid)),
        tags.SCHEDULED_STATION_NAME_SEQ: sq(),
        tags.SCHEDULED_STATION_CLASS_SEQ: sq(),
        tags.SCHEDULED_STATION_GEO_SEQ: sq(),
        tags.REFERENCED_REQUEST_SEQ: sq({
            tags.ACCESSION_NUMBER: elem("SH", accession or token("A", 12)),
            tags.ISSUER_OF_ACCESSION_NUMBER_SEQ: sq(),
            tags.STUDY_INSTANCE_UID: elem("UI", study_uid),
            tags.REQUESTED_PROCEDURE_DESCRIPTION: elem("LO", "AI analysis"),
            tags.REQUESTED_PROCEDURE_CODE_SEQ: sq(),
            tags.ORDER_PLACER_IDENTIFIER_SEQ: sq(),
            tags.ORDER_FILLER_IDENTIFIER_SEQ: sq(),
            tags.REQUESTED_PROCEDURE_ID: elem("SH", token("RP", 8)),
        }),
        tags.PROCEDURE_STEP_STATE: elem("CS", "SCHEDULED"),
        tags.PROGRESS_INFORMATION_SEQ: sq(),
        tags.WORKLIST_LABEL: elem("LO", worklist_label) if worklist_label else elem("LO"),
        tags.PRIORITY: elem("CS", priority),
        tags.PROCEDURE_STEP_LABEL: elem("LO", procedure_step_label or token("Step ")),
        tags.SCHEDULED_PROCESSING_PARAMETERS_SEQ: sq(_processing_parameter()),
        tags.PERFORMED_PROCEDURE_SEQ: sq(),
    }


def performed_procedure(*, omit: str | None = None) -> Dataset:
    """Update dataset filling the UPS Performed Procedure Sequence as §3.2 requires for COMPLETED.

    ``omit`` drops one item attribute (a tag) so tests can show the SCP refuses COMPLETED
    (C304) when a final-state "P" attribute is missing.
    """
    now = _dt.datetime.now(_dt.timezone.utc)
    item: Dataset = {
        tags.PERFORMED_STATION_NAME_SEQ: sq(code(*STATION_CODE)),
        tags.PERFORMED_START_DATETIME: elem("DT", dicom_datetime(now - _dt.timedelta(minutes=1))),
        tags.PERFORMED_WORKITEM_CODE_SEQ: sq(code(*DEFAULT_WORKITEM_CODE)),
        tags.PERFORMED_END_DATETIME: elem("DT", dicom_datetime(now)),
        tags.OUTPUT_INFORMATION_SEQ: sq(),
    }
    if omit:
        item.pop(omit)
    return {tags.PERFORMED_PROCEDURE_SEQ: sq(item)}


DISCONTINUED_UNSPECIFIED = ("110513", "DCM", "Discontinued for unspecified reason")


def cancellation_reason(reason: str = "Canceled by the conformance suite") -> Dataset:
    """Update dataset giving the CANCELED final-state "X" attributes the performer owns."""
    return {
        tags.PROGRESS_INFORMATION_SEQ: sq({
            tags.REASON_FOR_CANCELLATION: elem("LT", reason),
            tags.DISCONTINUATION_REASON_CODE_SEQ: sq(code(*DISCONTINUED_UNSPECIFIED)),
        }),
    }


def state_change(state: str, transaction_uid: str | None) -> Dataset:
    """Change State payload (§1.3.4): Procedure Step State plus Transaction UID (if given)."""
    ds: Dataset = {tags.PROCEDURE_STEP_STATE: elem("CS", state)}
    if transaction_uid is not None:
        ds[tags.TRANSACTION_UID] = elem("UI", transaction_uid)
    return ds
