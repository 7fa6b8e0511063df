"""Search query parsing and attribute matching (PS3.18 8.3.4, PS3.4 C.2.2.2) on DICOM JSON.

The same engine serves Search and filtered global subscriptions, so a workitem is "in" a
filter exactly when a search with that filter would find it. The Task Manager narrows
candidates with Redis indexes; this engine decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timezone
from functools import cache
from typing import Any, Iterable

from upsrs import datetimes
from upsrs import dicomjson as dj
from upsrs import vr as vrs
from upsrs.errors import QueryError
from upsrs.tables import ups_attributes

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
EMPTY_MATCH_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT"})
RANGE_VRS = frozenset({"DA", "DT", "TM"})
NUMERIC_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS"})
RESERVED = frozenset({"includefield", "fuzzymatching", "limit", "offset", "emptyvaluematching",
                      "multiplevaluematching", "accept", "charset", "filter", "deletionlock", "requester"})
TRANSACTION_UID = 0x00081195


def _text(v: Any) -> list[str]:
    """Comparable strings of one stored value (PN: every component group)."""
    if isinstance(v, dict):
        return [s for s in v.values() if isinstance(s, str)]
    if v is None:
        return []
    return [str(v).rstrip(" ")]


@dataclass
class Matcher:
    """Matches one attribute (``tag``) of a dataset. ``kind`` is one of universal, single,
    uids, wildcard, range, empty, multiple, sequence."""

    tag: int
    vr: str
    kind: str
    raw: str = ""
    values: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    low: float | None = None
    high: float | None = None
    children: list["Matcher"] = field(default_factory=list)
    tz: timezone = timezone.utc

    @property
    def name(self) -> str:
        return dj.keyword(self.tag)

    def matches(self, ds: dj.Dataset) -> bool:
        el = ds.get(dj.key(self.tag))
        if self.kind == "universal":
            return True
        stored = el.get("Value") if isinstance(el, dict) else None
        stored = stored if isinstance(stored, list) else []
        if self.kind == "empty":
            return not any(_text(v) and any(_text(v)) for v in stored) if self.vr != "SQ" else not stored
        if self.kind == "sequence":
            return any(isinstance(item, dict) and all(c.matches(item) for c in self.children) for item in stored)
        if not stored:
            return False
        if self.kind == "range":
            for v in stored:
                try:
                    lo, _ = datetimes.interval(self.vr, str(v), self.tz)
                except ValueError:
                    continue
                if (self.low is None or lo >= self.low) and (self.high is None or lo < self.high):
                    return True
            return False
        if self.kind == "wildcard":
            return any(self.pattern.match(t) for v in stored for t in _text(v))  # type: ignore[union-attr]
        if self.kind == "multiple":
            have = {t for v in stored for t in _text(v)}
            return all(x in have for x in self.values)
        if self.vr in NUMERIC_VRS:
            try:
                wanted = {float(x) for x in self.values}
                return any(float(v) in wanted for v in stored if v is not None)
            except (TypeError, ValueError):
                return False
        return any(t in self.values for v in stored for t in _text(v))


@dataclass
class Query:
    matchers: list[Matcher]
    includefields: set[int]
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    unsupported: list[str] = field(default_factory=list)  # status keys of statuses.txt ("fuzzy")

    def matches(self, ds: dj.Dataset) -> bool:
        return all(m.matches(ds) for m in self.matchers)


def _vr_of(tag: int) -> str:
    vrs_ = dj.dictionary_vrs(tag)
    if not vrs_:
        raise QueryError(f"{dj.keyword(tag)} has no VR in the data dictionary; it cannot be matched")
    return vrs_[0]


def _wildcard(value: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + r"\Z", re.S)


def _range(vr: str, value: str, tz: timezone) -> tuple[float | None, float | None] | None:
    """(low, high) of a range value ``a-b`` / ``-b`` / ``a-``, or None if it is not a range."""
    positions = [i for i, c in enumerate(value) if c == "-"]
    for i in positions:
        left, right = value[:i], value[i + 1:]
        try:
            lo = datetimes.interval(vr, left, tz)[0] if left else None
            hi = datetimes.interval(vr, right, tz)[1] if right else None
        except ValueError:
            continue
        if lo is None and hi is None:
            continue
        return lo, hi
    return None


def value_matcher(tag: int, value: str, *, tz: timezone = timezone.utc, emptyvalue: bool = False,
                  multiplevalue: bool = False) -> Matcher:
    """The matcher a query value asks for, by the attribute's VR (PS3.4 C.2.2.2)."""
    vr = _vr_of(tag)
    if tag == TRANSACTION_UID:
        raise QueryError("TransactionUID (0008,1195) is not a matching key")
    if value == "" or (value == "*" and vr in WILDCARD_VRS):
        return Matcher(tag, vr, "universal", value)
    if vr == "SQ":
        raise QueryError(f"{dj.keyword(tag)} is a sequence: match on its item attributes ({dj.keyword(tag)}.Attribute=value)")
    if emptyvalue and value == '""' and vr in EMPTY_MATCH_VRS:
        return Matcher(tag, vr, "empty", value)
    if vr == "UI" and "," in value:
        uids = tuple(u.strip() for u in value.split(","))
        for u in uids:
            if vrs.check_value("UI", u):
                raise QueryError(f"{dj.keyword(tag)}: {u!r} is not a UID")
        return Matcher(tag, vr, "single", value, uids)
    if vr in RANGE_VRS:
        try:
            lo, hi = datetimes.interval(vr, value, tz)
            return Matcher(tag, vr, "range", value, low=lo, high=hi, tz=tz)
        except ValueError:
            pass
        rng = _range(vr, value, tz)
        if rng is None:
            raise QueryError(f"{dj.keyword(tag)}: {value!r} is neither a {vr} value nor a range of them")
        return Matcher(tag, vr, "range", value, low=rng[0], high=rng[1], tz=tz)
    if multiplevalue and "," in value:
        return Matcher(tag, vr, "multiple", value, tuple(value.split(",")))
    if vr in WILDCARD_VRS and ("*" in value or "?" in value):
        return Matcher(tag, vr, "wildcard", value, pattern=_wildcard(value))
    if vr in NUMERIC_VRS:
        try:
            float(value)
        except ValueError:
            raise QueryError(f"{dj.keyword(tag)}: {value!r} is not a number") from None
    elif vr in vrs.STRING_RULES and vr not in ("DA", "DT", "TM"):
        msg = vrs.check_string(vr, value)
        if msg and vr != "CS":
            raise QueryError(f"{dj.keyword(tag)}: {msg}")
    # trailing spaces are padding, not part of a value (PS3.5 6.2): stored values are compared
    # without them (``_text``) and the search indexes drop them, so the key drops them too
    return Matcher(tag, vr, "single", value, (value.rstrip(" ") if vr not in NUMERIC_VRS else value,))


def parse_attribute_path(name: str) -> list[int]:
    try:
        return [dj.parse_attribute(part) for part in name.split(".")]
    except KeyError as exc:
        raise QueryError(f"unknown attribute {exc.args[0]!r} in {name!r}") from None


def _bool(name: str, value: str) -> bool:
    if value.lower() in ("true", ""):
        return True
    if value.lower() == "false":
        return False
    raise QueryError(f"{name} must be true or false, not {value!r}")


MAX_UINT = 2**31 - 1  # no search has more results: a larger limit/offset means the same


def _uint(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise QueryError(f"{name} must be an unsigned integer, not {value!r}")
    return min(int(value), MAX_UINT)


def build_matchers(keys: Iterable[tuple[str, str]], tz: timezone = timezone.utc, emptyvalue: bool = False,
                   multiplevalue: bool = False) -> list[Matcher]:
    """Matchers for ``attribute=value`` pairs; dotted paths that share a sequence prefix
    become one sequence matcher, so they must hold in the same item."""
    root: list[Matcher] = []
    seen: set[tuple[int, ...]] = set()
    for name, value in keys:
        path = parse_attribute_path(name)
        if tuple(path) in seen:
            raise QueryError(f"attribute {name!r} appears more than once in the query")
        seen.add(tuple(path))
        level = root
        for tag in path[:-1]:
            if _vr_of(tag) != "SQ":
                raise QueryError(f"{dj.keyword(tag)} in {name!r} is not a sequence")
            seq = next((m for m in level if m.tag == tag and m.kind in ("sequence", "universal")), None)
            if seq is None:
                seq = Matcher(tag, "SQ", "sequence")
                level.append(seq)
            elif seq.kind == "universal":
                seq.kind = "sequence"
            level = seq.children
        leaf = value_matcher(path[-1], value, tz=tz, emptyvalue=emptyvalue, multiplevalue=multiplevalue)
        existing = next((m for m in level if m.tag == leaf.tag and m.kind == "sequence"), None)
        if existing is None:
            level.append(leaf)
    return root


def parse_query(params: Iterable[tuple[str, str]], tz: timezone = timezone.utc) -> Query:
    """A Search request's query (PS3.18 Table 8.3.4-1). Unknown *reserved* parameters are
    ignored; unknown attributes are a 400 (``QueryError``)."""
    pairs = list(params)
    flags = {k.lower(): v for k, v in pairs if k.lower() in RESERVED}
    emptyvalue = _bool("emptyvaluematching", flags["emptyvaluematching"]) if "emptyvaluematching" in flags else False
    multiplevalue = _bool("multiplevaluematching", flags["multiplevaluematching"]) if "multiplevaluematching" in flags else False
    query = Query([], set())
    if "fuzzymatching" in flags and _bool("fuzzymatching", flags["fuzzymatching"]):
        query.unsupported.append("fuzzy")
    if "limit" in flags:
        query.limit = _uint("limit", flags["limit"])
    if "offset" in flags:
        query.offset = _uint("offset", flags["offset"])
    keys: list[tuple[str, str]] = []
    for k, v in pairs:
        lk = k.lower()
        if lk == "includefield":
            for name in v.split(","):
                name = name.strip()
                if name == "all":
                    query.include_all = True
                elif name:
                    path = parse_attribute_path(name)
                    if path[0] != TRANSACTION_UID:
                        query.includefields.add(path[0])
        elif lk not in RESERVED:
            keys.append((k, v))
    query.matchers = build_matchers(keys, tz, emptyvalue, multiplevalue)
    return query


@cache
def default_return_tags() -> tuple[frozenset[int], frozenset[int]]:
    """(always, if-present) top-level return keys of Table CC.2.5-3 (spec sec. 5.3):
    Return Key 1 and 2 always (type 2 even if empty), 1C and 2C when present."""
    always, present = set(), set()
    for tag, rule in ups_attributes().items():
        if rule.ret in ("1", "2"):
            always.add(tag)
        elif rule.ret in ("1C", "2C"):
            present.add(tag)
    always.discard(TRANSACTION_UID)
    return frozenset(always), frozenset(present)


@cache
def nested_return_tags() -> dict[int, frozenset[int]]:
    """Top-level sequences that are no return key themselves but whose items hold return
    keys (spec sec. 5.3 item 2: Return Key 1C "if set", e.g. Performed Procedure Step End
    DateTime and Actual Human Performers Sequence in the Performed Procedure Sequence):
    sequence tag -> those item tags."""
    out: dict[int, frozenset[int]] = {}
    for tag, rule in ups_attributes().items():
        if rule.ret != "-" or not rule.children:  # a return key 3 sequence comes whole when asked for
            continue
        kids = frozenset(t for t, c in rule.children.items() if c.ret in ("1", "2", "1C", "2C"))
        if kids:
            out[tag] = kids
    return out


@cache
def _default_keys() -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[tuple[str, int, frozenset[str]], ...]]:
    """(key, empty-element VR) of the always-returned tags, the if-present keys, and
    ``nested_return_tags`` by property name (every stored workitem is projected)."""
    always, present = default_return_tags()
    return (tuple((dj.key(t), (dj.dictionary_vrs(t) or ("UN",))[0]) for t in sorted(always)),
            tuple(dj.key(t) for t in sorted(present)),
            tuple((dj.key(seq), seq, frozenset(dj.key(t) for t in kids)) for seq, kids in nested_return_tags().items()))


def project(ds: dj.Dataset, query: Query) -> dj.Dataset:
    """The attributes a search result carries for ``ds``: return keys, match keys and
    includefields; never the Transaction UID."""
    if query.include_all:
        out = dict(ds)
        out.pop(dj.key(TRANSACTION_UID), None)
        return out
    always_keys, present_keys, nested = _default_keys()
    out: dj.Dataset = {}
    for k, vr in always_keys:
        el = ds.get(k)
        out[k] = el if el is not None else {"vr": vr}
    extra = query.includefields | {m.tag for m in query.matchers}
    for tag in extra:
        k = dj.key(tag)
        if k in out:
            continue
        if k in ds:
            out[k] = ds[k]
        else:
            vr = dj.dictionary_vrs(tag)
            out[k] = dj.element(vr[0] if vr else "UN")
    for k in present_keys:
        if k in ds:
            out[k] = ds[k]
    if "00080005" in ds:
        out["00080005"] = ds["00080005"]
    for k, seq, kids in nested:
        if k in out or k not in ds:
            continue
        kept = [{ik: iv for ik, iv in item.items() if ik in kids} for item in dj.items(ds, seq)]
        kept = [item for item in kept if item]
        if kept:
            out[k] = dj.element("SQ", *kept)
    out.pop(dj.key(TRANSACTION_UID), None)
    return out
