"""The UPS state machine engine: interprets ``standard/transitions.txt``.

Every state change of a workitem, whatever path it comes by, asks ``decide`` what the
standard says for (request, current state, Transaction UID); the answer is data.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from upsrs.tables import read_rows

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
FINAL_STATES = frozenset({COMPLETED, CANCELED})
TuidClass = Literal["correct", "incorrect", "missing"]


@dataclass(frozen=True)
class Decision:
    """What to do: ``path`` of states to pass through, an ``event`` to emit, ``update`` to
    apply, and/or a DIMSE ``status`` (failure, or a B3xx success-without-change warning)."""

    path: tuple[str, ...] = ()
    event: str = ""
    update: bool = False
    status: str = "0000"

    @property
    def refused(self) -> bool:
        return self.status[0] in "AC" or self.status[:4] in ("0105", "0106", "0110", "0111", "0120", "0121", "0124")


@cache
def _table() -> dict[tuple[str, str], Decision]:
    rows = read_rows("transitions.txt")
    table: dict[tuple[str, str], Decision] = {}
    for row in rows:
        request, cells = row[0], row[1:]
        if len(cells) != len(STATES):
            raise ValueError(f"transitions.txt: row {request!r} has {len(cells)} cells, expected {len(STATES)}")
        for state, cell in zip(STATES, cells):
            if cell == "-":
                continue
            if cell == "update":
                d = Decision(update=True)
            elif cell.startswith("event:"):
                d = Decision(event=cell[6:])
            elif cell.split(">")[0] in STATES:
                d = Decision(path=tuple(cell.split(">")))
            else:
                d = Decision(status=cell)
            table[(request, state)] = d
    return table


def classify_tuid(given: str | None, stored: str | None, state: str) -> TuidClass:
    if not given:
        return "missing"
    if state == SCHEDULED or given == stored:
        return "correct"
    return "incorrect"


def decide(request: str, state: str, given_tuid: str | None = None, stored_tuid: str | None = None) -> Decision:
    """``request`` is a target state (Change State), ``update`` or ``cancelrequest``."""
    key = request if request == "cancelrequest" else f"{request} tuid={classify_tuid(given_tuid, stored_tuid, state)}"
    try:
        return _table()[(key, state)]
    except KeyError:
        raise LookupError(f"the transition table has no cell for {key!r} in state {state!r}") from None
