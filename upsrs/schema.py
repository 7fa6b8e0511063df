"""Table CC.2.5-3 compiled into a JSON Schema: a fast "yes" for the validation engine.

``validation.check`` walks a dataset in Python, ~1.5 µs per element: about a third of an
N-CREATE's CPU in the Task Manager. Most datasets it sees are fine. This module compiles
the same table, read through the engine's own steps (``validation._steps``: the usage
columns and conditions as the walk reads them), into one JSON Schema per mode, checked by
jsonschema-rs (Rust) in a few microseconds. A dataset the schema accepts is one the engine
would accept with nothing to add; anything else — a problem, a type-2 attribute to add
empty, an attribute outside the table, a value form the schema does not model — goes to
the engine, which finds and words every problem. So the schema only ever answers "yes"
for the engine, never "no", and it is written to be stricter than the engine wherever the
two could differ:

  * elements: an object with ``vr`` (the dictionary's VR, not UN) and at most a ``Value``
    array; InlineBinary and BulkDataURI go to the engine;
  * values: per VR, a pattern that accepts a subset of what ``vr.check_value`` accepts
    (tests/test_schema.py checks each on generated values); integer VRs are left to the
    engine (JSON Schema's "integer" also matches 1.0, which the engine refuses);
  * only the attributes of the table, at the level the table has them;
  * requirements: type 1 present with a value, type 2 present (else the SCP adds it),
    "not allowed" absent, the sequences N-CREATE creates empty without items, N-SET's
    "SCP keeps a value"; conditions (``oneof``, ``when``, ``with``, and ``when=^`` on an
    enclosing item) as ``anyOf`` and ``if``/``then``.

Patterns run on Rust's ``regex`` crate (``RegexOptions``): linear time whatever a client
sends. Setting ``AIW_VALIDATION_CROSSCHECK=1`` (the test suite does) makes every "yes"
checked against the engine, which raises if the two disagree.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import Any

import jsonschema_rs

from upsrs import validation as v
from upsrs.tables import AttributeRule, enumerations, ups_attributes

Schema = dict[str, Any]

_NO_CONTROL = r"^[^\x00-\x1f\x7f\\]*$"  # no control character, no backslash
_TEXT = r"^[^\x00-\x08\x0b\x0e-\x1f\x7f]*$"  # LT/ST/UT: also TAB, LF, FF, CR; backslash allowed
# month and day: the 29th of February (leap years) goes to the engine
_MONTH_DAY = r"(?:(?:0[1-9]|1[0-2])(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])(?:29|30)|(?:0[13578]|1[02])31)"
_TIME = r"(?:[01][0-9]|2[0-3])(?:[0-5][0-9](?:[0-5][0-9](?:\.[0-9]{1,6})?)?)?"
_OFFSET = r"(?:[+-](?:0[0-9]|1[0-4])[0-5][0-9])"
_PN_GROUP = r"^[^\x00-\x1f\x7f\\^]*(?:\^[^\x00-\x1f\x7f\\^]*){0,4}$"


def _string(pattern: str, max_len: int | None = None) -> Schema:
    out: Schema = {"type": ["string", "null"], "pattern": pattern}
    if max_len is not None:
        out["maxLength"] = max_len
    return out


# A value of each VR the engine certainly accepts (or null: an empty value). Written anew
# rather than taken from ``vr._FAST_VALID``: those use lookahead and possessive quantifiers,
# which Rust's regex crate does not have, and the dates here take the 29th to 31st too.
VALUES: dict[str, Schema] = {
    "AE": _string(r"^(?: *[\x21-\x5b\x5d-\x7e][\x20-\x5b\x5d-\x7e]*)?$", 16),
    "AS": _string(r"^[0-9]{3}[DWMY]$"),
    "AT": _string(r"^[0-9A-Fa-f]{8}$"),
    "CS": _string(r"^[A-Z0-9_ ]*$", 16),
    "DA": _string(rf"^[12][0-9]{{3}}{_MONTH_DAY}$"),
    "DS": {"anyOf": [_string(r"^ *[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *$", 16),
                     {"type": "number"}]},
    "DT": _string(rf"^[12][0-9]{{3}}(?:0[1-9]|1[0-2]|{_MONTH_DAY}{_TIME}?)?{_OFFSET}?$"),
    "IS": {"anyOf": [_string(r"^ *[+-]?[0-9]{1,9} *$", 12),
                     {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}]},
    "LO": _string(_NO_CONTROL, 64),
    "LT": _string(_TEXT, 10240),
    "PN": {"type": ["object", "null"], "additionalProperties": False,
           "properties": {g: {"type": "string", "maxLength": 64, "pattern": _PN_GROUP}
                          for g in ("Alphabetic", "Ideographic", "Phonetic")}},
    "SH": _string(_NO_CONTROL, 16),
    "ST": _string(_TEXT, 1024),
    "TM": _string(rf"^{_TIME}$"),
    "UC": _string(_NO_CONTROL),
    "UI": _string(r"^(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*$", 64),
    "UR": _string(r"^[\x21-\x7e]*$"),
    "UT": _string(_TEXT),
}
_ONLY_EMPTY: Schema = {"type": "null"}  # integer, float and binary VRs: the engine decides

# An element with a value, as ``dicomjson.has_value`` sees one that passed the element
# schema: a Value array holding something other than null and "".
HAS_VALUE: Schema = {"required": ["Value"], "properties": {"Value": {"contains": {"not": {"enum": [None, ""]}}}}}


def _element(rule: AttributeRule, item: Schema) -> Schema:
    vr = rule.vrs[0]
    values = item if vr == "SQ" else ({"$ref": f"#/$defs/{vr}"} if vr in VALUES else _ONLY_EMPTY)
    enum = enumerations().get(rule.tag)
    if enum and vr != "SQ":
        values = {"allOf": [values, {"enum": [None, "", *sorted(enum)]}]}
    return {"type": "object", "required": ["vr"], "additionalProperties": False,
            "properties": {"vr": {"const": vr}, "Value": {"type": "array", "items": values}}}


def _with_value(el: Schema) -> Schema:
    return {"allOf": [el, HAS_VALUE]}


def _present_with_value(key: str) -> Schema:
    return {"required": [key], "properties": {key: HAS_VALUE}}


def _first_value_is(key: str, value: str) -> Schema:
    return {"required": [key], "properties": {key: {"required": ["Value"], "properties": {
        "Value": {"minItems": 1, "prefixItems": [{"const": value}]}}}}}


def _along(path: tuple[str, ...], leaf: Schema) -> Schema:
    """``leaf`` for every item reached from a dataset through the sequences ``path``."""
    for key in reversed(path):
        leaf = {"properties": {key: {"properties": {"Value": {"items": leaf}}}}}
    return leaf


def _dataset(rules: dict[int, AttributeRule], mode: v.Mode, enclosing: list[tuple[Schema, str]]) -> Schema:
    """One level of the table (its items compiled inside). ``enclosing``: the schemas of
    the datasets above, outermost first, each with the key of the sequence taken down."""
    props: dict[str, Any] = {}
    required: list[str] = []
    conditions: list[Schema] = []
    here: Schema = {"type": "object", "additionalProperties": False, "properties": props}
    groups: set[tuple[str, ...]] = set()
    for s in v._steps(rules, mode):
        rule, key = s.rule, s.key
        if s.t == "NA":
            props[key] = False
            continue
        item: Schema = {}
        if rule.is_sequence:
            if mode == "create" and rule.created_empty:
                item = {"not": {}}  # no items
            else:
                item = _dataset(rule.children, mode, [*enclosing, (here, key)])
        el = _element(rule, item)
        if s.conditional and s.cond is not None:
            cond = s.cond
            if cond.kind == "oneof":
                if cond.keys not in groups:
                    groups.add(cond.keys)
                    conditions.append({"anyOf": [_present_with_value(k) for k in cond.keys]})
            elif cond.kind == "with":
                conditions.append({"if": _present_with_value(cond.keys[0]), "then": _present_with_value(key)})
            elif cond.up == 0:
                conditions.append({"if": _first_value_is(cond.key, cond.value), "then": _present_with_value(key)})
            elif cond.up <= len(enclosing):
                # "when=^T:V": T is on the item ``up`` levels above; the requirement is
                # written there, down the sequences that lead here
                above, _ = enclosing[-cond.up]
                path = tuple(k for _, k in enclosing[-cond.up:])
                above.setdefault("allOf", []).append(
                    {"if": _first_value_is(cond.key, cond.value), "then": _along(path, _present_with_value(key))})
        elif s.t == "1":
            required.append(key)
            el = _with_value(el)
        elif s.t == "2" and mode == "create":
            required.append(key)  # absent: the SCP adds it, and the engine says so
        if mode == "set" and s.scp_keeps:
            el = _with_value(el)
        props[key] = el
    if required:
        here["required"] = required
    if conditions:
        here.setdefault("allOf", []).extend(conditions)
    return here


_MAPS = ("properties", "$defs")  # keywords whose value maps names to schemas (not a schema)


def _shared(root: Schema, min_size: int = 300) -> Schema:
    """``root`` with each subschema that occurs more than once (a code item, the items of a
    macro the table includes at several places) kept once in ``$defs`` and referred to.
    Compiled inline, a mode's schema took 5.5 MiB (create) and 8.7 MiB (set) of the
    server's memory; shared, 2.6 and 2.7, and it checks as fast."""
    seen: collections.Counter[str] = collections.Counter()

    def count(node: Any) -> None:
        if isinstance(node, dict):
            seen[json.dumps(node, sort_keys=True)] += 1
            for value in node.values():
                count(value)
        elif isinstance(node, list):
            for value in node:
                count(value)

    defs: dict[str, Schema] = {}
    names: dict[str, str] = {}

    def share(node: Any, is_schema: bool = True) -> Any:
        if isinstance(node, list):
            return [share(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {k: share(x, k not in _MAPS) for k, x in node.items()}
        text = json.dumps(node, sort_keys=True)
        if not is_schema or seen[text] < 2 or len(text) < min_size:
            return out
        name = names.get(text)
        if name is None:
            name = names[text] = f"shared{len(names)}"
            defs[name] = out
        return {"$ref": f"#/$defs/{name}"}

    count(root)
    out = {k: share(x, k not in _MAPS) for k, x in root.items()}
    out["$defs"] = {**out.get("$defs", {}), **defs}
    return out


@functools.cache
def schema(mode: v.Mode) -> Schema:
    # the value schemas of the VRs once, referred to by every element
    return _shared({"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": VALUES,
                    **_dataset(ups_attributes(), mode, [])})


@functools.cache
def _validator(mode: v.Mode) -> Any:
    return jsonschema_rs.Draft202012Validator(schema(mode), pattern_options=jsonschema_rs.RegexOptions())


def prepare() -> None:
    """Compile both schemas now (~50 ms) rather than in a server's first request."""
    for mode in ("create", "set"):
        _validator(mode)  # type: ignore[arg-type]


def accepts(ds: Any, mode: v.Mode) -> bool:
    """True only if ``validation.check(ds, mode)`` would find no problem and add nothing."""
    try:
        return bool(_validator(mode).is_valid(ds))
    except (ValueError, TypeError, OverflowError, RecursionError):
        return False  # a value the validator cannot take in (a huge integer): the engine decides
