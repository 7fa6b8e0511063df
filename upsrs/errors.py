"""Errors that name the DICOM element they are about.

A path such as ``(0040,4018)[0](0008,0100)`` tells a user exactly which element of which
item is wrong; the server turns these into 4xx responses with that text in the Warning.
"""

from __future__ import annotations

from dataclasses import dataclass


def format_tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset. ``status`` is the DIMSE status it corresponds to
    (0105 no such attribute, 0106 invalid value, 0120 missing attribute, 0121 missing value,
    C309 not SCHEDULED, ...)."""

    path: str
    message: str
    status: str = "0106"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class DatasetError(ValueError):
    """A dataset that cannot be accepted, with every problem found in it."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems[:5]) + (" ..." if len(problems) > 5 else ""))

    @property
    def status(self) -> str:
        return self.problems[0].status if self.problems else "0106"


class QueryError(ValueError):
    """A search or subscription filter that cannot be parsed (HTTP 400)."""
