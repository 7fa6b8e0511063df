"""Minimal DICOM JSON (PS3.18 Annex F.2) builders and readers.

Only what the suite needs: build elements and code items, read values back out of a
server's response, generate UIDs, and compare DICOM DT values by meaning (a server may
answer with a different precision or a UTC offset).
"""

from __future__ import annotations

import datetime as _dt
import re
import uuid
from typing import Any

from . import tags

Dataset = dict[str, Any]


def new_uid() -> str:
    """A fresh UID in the UUID-derived form of PS3.5 B.2 (``2.25.<uuid as integer>``)."""
    return f"2.25.{uuid.uuid4().int}"


def token(prefix: str = "C", length: int = 10) -> str:
    """A short unique upper-case token, e.g. for labels that isolate a test on a shared server."""
    return f"{prefix}{uuid.uuid4().hex[:length].upper()}"


def elem(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; no values gives the empty (type 2) form without ``Value``."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def pn(alphabetic: str | None) -> dict[str, Any]:
    """A PN attribute (F.2.2: person names are objects with an ``Alphabetic`` group)."""
    return elem("PN", {"Alphabetic": alphabetic}) if alphabetic else elem("PN")


def sq(*items: Dataset) -> dict[str, Any]:
    """A sequence attribute; no items gives the empty type-2 sequence ``{"vr": "SQ"}``."""
    return elem("SQ", *items)


def code(value: str, scheme: str, meaning: str) -> Dataset:
    """A code item of the UPS Code Sequence Macro (PS3.4 Table CC.2.5-2a)."""
    return {
        tags.CODE_VALUE: elem("SH", value),
        tags.CODING_SCHEME_DESIGNATOR: elem("SH", scheme),
        tags.CODE_MEANING: elem("LO", meaning),
    }


def dicom_datetime(moment: _dt.datetime | None = None) -> str:
    """Format a DT value (YYYYMMDDHHMMSS) for ``moment`` (default: now, UTC)."""
    moment = moment or _dt.datetime.now(_dt.timezone.utc)
    return moment.strftime("%Y%m%d%H%M%S")


def values(ds: Dataset, tag: str) -> list[Any]:
    """The ``Value`` array of ``tag`` ([] when absent or empty)."""
    attribute = ds.get(tag)
    if not isinstance(attribute, dict):
        return []
    found = attribute.get("Value")
    return list(found) if isinstance(found, list) else []


def first(ds: Dataset, tag: str) -> Any:
    """The first value of ``tag``, or None when absent/empty."""
    found = values(ds, tag)
    return found[0] if found else None


def items(ds: Dataset, tag: str) -> list[Dataset]:
    """The items of a sequence attribute ([] when absent or empty)."""
    return [item for item in values(ds, tag) if isinstance(item, dict)]


def pn_text(ds: Dataset, tag: str) -> str | None:
    """The Alphabetic group of the first PN value (servers may also emit a bare string)."""
    value = first(ds, tag)
    if isinstance(value, dict):
        return value.get("Alphabetic")
    return value


def code_values(ds: Dataset, tag: str) -> list[str]:
    """The Code Values of every item of a code sequence."""
    return [first(item, tags.CODE_VALUE) for item in items(ds, tag)]


def contains_tag(node: Any, tag: str) -> bool:
    """True when ``tag`` occurs as a key at any nesting level of a DICOM JSON tree."""
    if isinstance(node, dict):
        return any(key.upper() == tag.upper() or contains_tag(child, tag) for key, child in node.items())
    if isinstance(node, list):
        return any(contains_tag(child, tag) for child in node)
    return False


_DT = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$"
)


def parse_datetime(text: str) -> _dt.datetime:
    """Parse a DICOM DT (PS3.5 6.2: YYYYMMDDHHMMSS.FFFFFF&ZZXX, trailing parts optional).

    Raises ValueError for anything else, so that a malformed SCP-stamped value fails the
    test that reads it rather than being silently ignored.
    """
    match = _DT.match(text.strip())
    if not match:
        raise ValueError(f"not a DICOM DT value: {text!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or "0").ljust(6, "0"))
    moment = _dt.datetime(
        int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
        int(second or 0), micro,
    )
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = _dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        moment = moment.replace(tzinfo=_dt.timezone(sign * delta))
    return moment


def comparable(a: _dt.datetime, b: _dt.datetime) -> tuple[_dt.datetime, _dt.datetime]:
    """Make two parsed DTs comparable (drop the offset if only one of them carries one)."""
    if (a.tzinfo is None) != (b.tzinfo is None):
        return a.replace(tzinfo=None), b.replace(tzinfo=None)
    return a, b
