"""Value-format rules of the VRs (PS3.5 6.2) for DICOM JSON values (PS3.18 F.2.3).

One table of rules, one checker: each VR names its maximum length, the characters it may
hold, or a parser. The checker returns a message naming what is wrong, or None.
"""

from __future__ import annotations

import base64
import functools
import binascii
import re
from dataclasses import dataclass
from typing import Any, Callable

from upsrs import datetimes

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_CS = re.compile(r"^[A-Z0-9_ ]*$")
_DS = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_IS = re.compile(r"^\s*[+-]?\d+\s*$")
_AT = re.compile(r"^[0-9A-Fa-f]{8}$")
_AS = re.compile(r"^\d{3}[DWMY]$")
_AE = re.compile(r"^[\x20-\x5b\x5d-\x7e]*$")  # Default Character Repertoire, no backslash, no control
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")  # TAB and ESC are allowed
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # text VRs also allow LF, FF, CR


def _parse(fn: Callable[[str], Any]) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        try:
            fn(v)
        except (ValueError, OverflowError) as exc:
            return str(exc)
        return None

    return check


@dataclass(frozen=True)
class StringRule:
    max_len: int | None = None
    pattern: re.Pattern[str] | None = None
    what: str = ""
    text: bool = False  # LT/ST/UT: backslash and CR/LF allowed
    parser: Callable[[str], str | None] | None = None


STRING_RULES: dict[str, StringRule] = {
    "AE": StringRule(16, _AE, "characters of the Default Character Repertoire (ASCII), not only spaces"),
    "AS": StringRule(4, _AS, "nnnD/W/M/Y"),
    "CS": StringRule(16, _CS, "upper-case letters, digits, space and underscore"),
    "DA": StringRule(8, parser=_parse(datetimes.da_interval)),
    "DS": StringRule(16, _DS, "a decimal number"),
    "DT": StringRule(26, parser=_parse(datetimes.dt_interval)),
    "IS": StringRule(12, _IS, "an integer"),
    "LO": StringRule(64),
    "LT": StringRule(10240, text=True),
    "SH": StringRule(16),
    "ST": StringRule(1024, text=True),
    "TM": StringRule(14, parser=_parse(datetimes.tm_interval)),
    "UC": StringRule(None),
    "UI": StringRule(64, _UID, "dot-separated decimal components without leading zeros"),
    "UR": StringRule(None),
    "UT": StringRule(None, text=True),
    "AT": StringRule(8, _AT, "8 hexadecimal digits"),
}

_IS_MIN, _IS_MAX = -(2**31), 2**31 - 1  # PS3.5 Table 6.2-1 IS
PN_GROUP_MAX = 64  # PS3.5 Table 6.2-1 PN: 64 characters maximum per component group

INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "US": (0, 2**16 - 1),
    "SS": (-(2**15), 2**15 - 1),
    "UL": (0, 2**32 - 1),
    "SL": (-(2**31), 2**31 - 1),
    "UV": (0, 2**64 - 1),
    "SV": (-(2**63), 2**63 - 1),
}
FLOAT_VRS = frozenset({"FL", "FD"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
ALL_VRS = frozenset(STRING_RULES) | frozenset(INTEGER_RANGES) | FLOAT_VRS | BINARY_VRS | {"PN", "SQ"}
PN_COMPONENT_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def check_string(vr: str, value: str) -> str | None:
    rule = STRING_RULES[vr]
    if rule.max_len is not None and len(value) > rule.max_len:
        return f"{vr} value is {len(value)} characters long, the maximum is {rule.max_len}"
    if not rule.text and vr not in ("UR", "UT") and "\\" in value:
        return f"{vr} value contains a backslash (the value delimiter)"
    if (_CONTROL_TEXT if rule.text else _CONTROL).search(value):
        return f"{vr} value contains a control character"
    if vr == "UR" and (value != value.rstrip() or " " in value.strip()):
        return "UR value contains spaces"
    if vr == "UI" and value.endswith("\x00"):
        value = value[:-1]
    if rule.pattern is not None and not rule.pattern.match(value if vr != "CS" else value.rstrip()):
        return f"{value!r} is not a valid {vr} value ({rule.what})"
    if vr == "AE" and value and not value.strip():
        return "an AE value may not consist of spaces only"  # PS3.5 Table 6.2-1
    if vr == "IS" and not _IS_MIN <= int(value) <= _IS_MAX:
        return f"{value.strip()} is out of range for IS ({_IS_MIN}..{_IS_MAX})"
    if rule.parser is not None:
        return rule.parser(value)
    return None


def check_value(vr: str, value: Any) -> str | None:
    """None if ``value`` is a valid DICOM JSON value of ``vr``, else why not."""
    if value is None:
        return None  # an empty value inside a multi-valued element
    if vr in STRING_RULES:
        if vr in ("DS", "IS") and isinstance(value, (int, float)) and not isinstance(value, bool):
            if vr == "IS" and not float(value).is_integer():
                return f"{value!r} is not an integer (IS)"
            if vr == "IS" and not _IS_MIN <= value <= _IS_MAX:
                return f"{value} is out of range for IS ({_IS_MIN}..{_IS_MAX})"
            return None
        if not isinstance(value, str):
            return f"{vr} value must be a string, got {type(value).__name__}"
        return check_string(vr, value)
    if vr in INTEGER_RANGES:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{vr} value must be an integer, got {value!r}"
        lo, hi = INTEGER_RANGES[vr]
        if not lo <= value <= hi:
            return f"{value} is out of range for {vr} ({lo}..{hi})"
        return None
    if vr in FLOAT_VRS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if value in ("NaN", "Infinity", "-Infinity"):
                return None
            return f"{vr} value must be a number, got {value!r}"
        return None
    if vr == "PN":
        if isinstance(value, str):
            return "PN value must be an object with Alphabetic/Ideographic/Phonetic (PS3.18 F.2.2)"
        if not isinstance(value, dict):
            return f"PN value must be an object, got {type(value).__name__}"
        for group, text in value.items():
            if group not in PN_COMPONENT_GROUPS:
                return f"PN component group {group!r} is not Alphabetic, Ideographic or Phonetic"
            if not isinstance(text, str):
                return f"PN {group} must be a string"
            if len(text) > PN_GROUP_MAX:
                return f"PN {group} is {len(text)} characters long, the maximum is {PN_GROUP_MAX}"
            if text.count("^") > 4:
                return f"PN {group} has more than 5 components"
            if "\\" in text or _CONTROL.search(text):
                return f"PN {group} contains a backslash or a control character"
        return None
    if vr in BINARY_VRS:
        return f"{vr} values travel as InlineBinary or BulkDataURI, not Value"
    return f"unknown VR {vr!r}"


def check_inline_binary(text: Any) -> str | None:
    if not isinstance(text, str):
        return "InlineBinary must be a base64 string"
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return "InlineBinary is not valid base64"
    return None


# Values the full check certainly accepts, recognised by one regular expression: the
# common case (printable ASCII within the length limit) costs one C-level match instead of
# the rule-by-rule walk of ``check_string``. Anything else — a longer, non-ASCII or
# malformed value — takes the full check, which is the one that words the message. Each
# pattern accepts a subset of what ``check_string`` accepts (tests/test_validation.py
# checks that on generated values).
_PRINTABLE_NO_BACKSLASH = r"[\x20-\x5b\x5d-\x7e]"
_FAST_VALID: dict[str, re.Pattern[str]] = {
    "CS": re.compile(r"[A-Z0-9_ ]{0,16}"),
    "SH": re.compile(_PRINTABLE_NO_BACKSLASH + "{0,16}"),
    "LO": re.compile(_PRINTABLE_NO_BACKSLASH + "{0,64}"),
    "UC": re.compile(_PRINTABLE_NO_BACKSLASH + "*"),
    "ST": re.compile(r"[\x20-\x7e\t\n\r]{0,1024}"),
    "LT": re.compile(r"[\x20-\x7e\t\n\r]{0,10240}"),
    "UT": re.compile(r"[\x20-\x7e\t\n\r]*"),
    "UR": re.compile(r"[\x21-\x7e]*"),
    # no capturing groups, and digits taken possessively: a workitem holds ~20 UIDs
    "UI": re.compile(r"(?=[0-9.]{1,64}$)(?:0|[1-9][0-9]*+)(?:\.(?:0|[1-9][0-9]*+))*+"),
    "DS": re.compile(r"(?=[ +\-0-9.eE]{1,16}$) *[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)? *"),
    "IS": re.compile(r"(?=[ +\-0-9]{1,12}$) *[+-]?[0-9]{1,9} *"),
    "AS": re.compile(r"[0-9]{3}[DWMY]"),
    # days 01-28 exist in every month of every year; the 29th to 31st go to the full check
    "DA": re.compile(r"[1-9][0-9]{3}(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])"),
    "AT": re.compile(r"[0-9A-Fa-f]{8}"),
}


# ``pattern.fullmatch`` per VR: a value that is a string and matches is valid (the
# validation engine tries this before it calls ``checker``).
FAST_MATCH: dict[str, Callable[[str], Any]] = {vr: p.fullmatch for vr, p in _FAST_VALID.items()}


def fast_valid(vr: str, value: str) -> bool:
    """True only if ``check_string(vr, value)`` would accept ``value`` (False = ask it)."""
    pattern = _FAST_VALID.get(vr)
    return pattern is not None and pattern.fullmatch(value) is not None


@functools.cache
def checker(vr: str) -> Callable[[Any], str | None]:
    """``check_value`` bound to one VR, with a fast path for the common case of a string
    value of a string VR (the validation engine calls it for every value of a dataset)."""
    fast = _FAST_VALID.get(vr)
    if fast is not None:
        match = fast.fullmatch

        def check_fast(value: Any) -> str | None:
            if type(value) is str and match(value) is not None:
                return None
            return check_value(vr, value)
        return check_fast
    if vr in STRING_RULES and vr not in ("DS", "IS"):
        def check_str(value: Any) -> str | None:
            if type(value) is str:
                return check_string(vr, value)
            return check_value(vr, value)
        return check_str
    return lambda value: check_value(vr, value)
