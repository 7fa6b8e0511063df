"""Which Redis search indexes a workitem belongs to, and which query keys they answer.

Indexes are sorted sets scored by creation sequence (stable paging) named
``{prefix}ix:{name}:{value}``; Scheduled Procedure Step Start DateTime is one sorted set
scored by time. Indexes narrow the candidates; ``upsrs.matching`` decides, except where an
index answers a key exactly (``exact_index``), which lets a page be read without fetching
every candidate.
"""

from __future__ import annotations

from datetime import timezone

from upsrs import datetimes
from upsrs import dicomjson as dj
from upsrs.matching import Matcher

START_DATETIME = 0x00404005
SOP_INSTANCE_UID = 0x00080018

# index name -> attribute path (top-level tag, or sequence tag + item tag)
INDEXED_PATHS: dict[str, tuple[int, ...]] = {
    "state": (0x00741000,),
    "ready": (0x00404041,),
    "prio": (0x00741200,),
    "wl": (0x00741202,),
    "label": (0x00741204,),
    "pid": (0x00100020,),
    "study": (0x0020000D,),
    "wcode": (0x00404018, 0x00080100),
    "station": (0x00404025, 0x00080100),
    "acc": (0x0040A370, 0x00080050),
}
_BY_PATH = {path: name for name, path in INDEXED_PATHS.items()}
MAX_INDEXED_VALUE = 128
INDEXED_KEYS = frozenset(f"{path[0]:08X}" for path in INDEXED_PATHS.values())


def _strings(values: list) -> set[str]:
    return {str(v).rstrip(" ") for v in values if v not in (None, "") and len(str(v)) <= MAX_INDEXED_VALUE}


COMPOSITE = ("state", "wcode")  # the performer's pull: SCHEDULED workitems of its codes
_TOP = tuple((name, f"{path[0]:08X}") for name, path in INDEXED_PATHS.items() if len(path) == 1)
_NESTED = tuple((name, f"{path[0]:08X}", f"{path[1]:08X}") for name, path in INDEXED_PATHS.items() if len(path) == 2)


def _values(ds: object, key: str) -> list:
    """``dj.values`` by property name (this runs for ten paths at every commit)."""
    el = ds.get(key) if isinstance(ds, dict) else None
    if not isinstance(el, dict):
        return []
    v = el.get("Value")
    return v if isinstance(v, list) else []


def _element_strings(el: object) -> set[str] | tuple[str, ...]:
    """``_strings`` of an element's values; the usual one string value without building a
    set (this runs for ten paths at every commit)."""
    if not isinstance(el, dict):
        return ()
    v = el.get("Value")
    if not isinstance(v, list) or not v:
        return ()
    if len(v) == 1:
        s = v[0]
        if type(s) is str:
            return (s.rstrip(" "),) if s and len(s) <= MAX_INDEXED_VALUE else ()
    return _strings(v)


def _add(keys: set[str], head: str, values: set[str] | tuple[str, ...]) -> None:
    for v in values:
        keys.add(head + v)


def index_keys(prefix: str, ds: dj.Dataset) -> set[str]:
    """Every index key the workitem belongs to (including the all-workitems set)."""
    keys = {f"{prefix}ix:all"}
    if not isinstance(ds, dict):
        return keys
    states: set[str] | tuple[str, ...] = ()
    codes: set[str] | tuple[str, ...] = ()
    for name, k in _TOP:
        vals = _element_strings(ds.get(k))
        if vals:
            _add(keys, f"{prefix}ix:{name}:", vals)
            if name == "state":
                states = vals
    for name, seq, k in _NESTED:
        vals: set[str] | tuple[str, ...] = ()
        for item in _values(ds, seq):
            if isinstance(item, dict):
                found = _element_strings(item.get(k))
                if found:
                    vals = found if not vals else {*vals, *found}
        if vals:
            _add(keys, f"{prefix}ix:{name}:", vals)
            if name == "wcode":
                codes = vals
    for st in states:
        for code in codes:
            keys.add(f"{prefix}ix:sw:{st}|{code}")
    return keys


def start_score(ds: dj.Dataset, tz: timezone) -> float | None:
    v = dj.first(ds, START_DATETIME)
    if not isinstance(v, str):
        return None
    try:
        return datetimes.dt_interval(v, tz)[0]
    except ValueError:
        return None


def index_for(m: Matcher, prefix: str) -> tuple[str | None, bool]:
    """(index key, exact) for a top-level matcher: the key narrowing candidates (None if
    no index applies) and whether membership in it is the whole answer for this matcher."""
    if m.kind == "single" and len(m.values) == 1 and (m.tag,) in _BY_PATH:
        v = m.values[0].rstrip(" ")
        return f"{prefix}ix:{_BY_PATH[(m.tag,)]}:{v}", True
    if m.kind == "sequence":
        best: tuple[str | None, bool] = (None, False)
        for c in m.children:
            if c.kind == "single" and len(c.values) == 1 and (m.tag, c.tag) in _BY_PATH:
                key = f"{prefix}ix:{_BY_PATH[(m.tag, c.tag)]}:{c.values[0].rstrip(' ')}"
                best = (key, len(m.children) == 1)
                break
        return best
    return None, False


def combine(keys: list[str], prefix: str) -> list[str]:
    """Replace a state key and a workitem-code key by their composite index, so the
    commonest search (SCHEDULED workitems of a code) reads one sorted set."""
    state = next((k for k in keys if k.startswith(f"{prefix}ix:state:")), None)
    code = next((k for k in keys if k.startswith(f"{prefix}ix:wcode:")), None)
    if state is None or code is None:
        return keys
    composite = f"{prefix}ix:sw:{state[len(prefix) + 9:]}|{code[len(prefix) + 9:]}"
    return [composite] + [k for k in keys if k not in (state, code)]
