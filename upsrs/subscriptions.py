"""The per-workitem subscription state machine (PS3.4 Table CC.2.3-2), from
``standard/subscriptions.txt``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from upsrs.tables import read_rows

NONE, LOCK, NOLOCK = "NONE", "LOCK", "NOLOCK"
COLUMNS = (NONE, LOCK, NOLOCK)


@dataclass(frozen=True)
class Step:
    state: str
    report: bool  # send the AE an initial UPS State Report


@cache
def _table() -> dict[tuple[str, str], Step]:
    out: dict[tuple[str, str], Step] = {}
    for row in read_rows("subscriptions.txt"):
        event, cells = row[0], row[1:]
        for col, cell in zip(COLUMNS, cells):
            if cell == "-":
                continue
            state, _, flag = cell.partition(" ")
            out[(event, col)] = Step(state, flag == "+report")
    return out


def step(event: str, current: str) -> Step:
    try:
        return _table()[(event, current)]
    except KeyError:
        raise LookupError(f"subscriptions.txt has no cell for {event!r} in {current!r}") from None
