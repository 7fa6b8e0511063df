"""Assertions on workitem content shared by several transactions' tests."""

from __future__ import annotations

from . import tags
from .dicomjson import Dataset, first, items, parse_datetime


def canceled_with_reason(ds: Dataset) -> None:
    """A CANCELED workitem meets the 'X' final-state requirements (PS3.4 CC.2.5.1.3, spec §3.2).

    Procedure Step Cancellation DateTime (SCP fills it with the current time when empty)
    and a Procedure Step Discontinuation Reason Code Sequence item, in the Procedure Step
    Progress Information Sequence.
    """
    assert first(ds, tags.PROCEDURE_STEP_STATE) == "CANCELED"
    progress = items(ds, tags.PROGRESS_INFORMATION_SEQ)
    assert progress, "CANCELED workitem has no Procedure Step Progress Information Sequence item"
    stamped = [first(item, tags.CANCELLATION_DATETIME) for item in progress if first(item, tags.CANCELLATION_DATETIME)]
    assert stamped, "SCP must fill Procedure Step Cancellation DateTime (0040,4052)"
    parse_datetime(stamped[0])
    assert any(items(item, tags.DISCONTINUATION_REASON_CODE_SEQ) for item in progress), (
        "no Procedure Step Discontinuation Reason Code Sequence (0074,100E) item"
    )
