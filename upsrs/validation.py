"""The one engine that checks workitems against Table CC.2.5-3 (``tables.ups_attributes``).

It answers three questions, all from the table's columns:
  * is this dataset acceptable for N-CREATE / N-SET (``check``)?
  * which type-2 attributes must the SCP add empty (``Outcome.added``)?
  * does the workitem meet the final-state requirements for COMPLETED / CANCELED
    (``final_state_problems``)?
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from upsrs import dicomjson as dj
from upsrs import vr as vrs
from upsrs.errors import Problem, format_tag
from upsrs.tables import AttributeRule, enumerations, ups_attributes

Mode = Literal["create", "set"]
PROCEDURE_STEP_STATE = 0x00741000
TRANSACTION_UID = 0x00081195


@dataclass
class Outcome:
    problems: list[Problem] = field(default_factory=list)
    added: list[str] = field(default_factory=list)  # paths of type-2 elements the SCP added empty

    @property
    def ok(self) -> bool:
        return not self.problems


PathT = tuple[int, ...]  # tags and item numbers (items as -1 - n), formatted only for a problem


def format_path(path: PathT) -> str:
    return "".join(format_tag(p) if p >= 0 else f"[{-1 - p}]" for p in path)


@dataclass(frozen=True)
class _KeyInfo:
    tag: int
    allowed: tuple[str, ...]
    enum: frozenset[str] | None
    vrs_ok: frozenset[str] = frozenset()  # the VRs ``_check_element`` accepts for this tag


def _vrs_ok(allowed: tuple[str, ...]) -> frozenset[str]:
    return frozenset(vr for vr in vrs.ALL_VRS
                     if not allowed or vr in allowed or vr == "UN" or ("OB" in allowed and vr == "OW"))


_KEYS: dict[str, _KeyInfo | Problem] = {}
_FAST_MATCH = vrs.FAST_MATCH
_BODY_MEMBERS = frozenset({"vr", "Value", "InlineBinary", "BulkDataURI"})


def _key_info(k: str) -> _KeyInfo | Problem:
    """What a property name is (cached: a workitem uses the same few hundred keys)."""
    found = _KEYS.get(k)
    if found is not None:
        return found
    if len(k) != 8 or any(c not in "0123456789ABCDEFabcdef" for c in k):
        info: _KeyInfo | Problem = Problem("", f"property {k!r} is not 8 hexadecimal digits")
    elif k != k.upper():
        info = Problem("", f"property {k!r} must be upper-case hexadecimal")
    else:
        tag = int(k, 16)
        if tag >> 16 == 0 or tag >> 16 == 0x0002:
            info = Problem(format_tag(tag), "command and file meta elements do not belong in a dataset", "0105")
        elif tag & 0xFFFF == 0:
            info = Problem(format_tag(tag), "group length elements are not allowed in DICOM JSON", "0105")
        else:
            allowed = dj.dictionary_vrs(tag)
            info = _KeyInfo(tag, allowed, enumerations().get(tag), _vrs_ok(allowed))
    if len(_KEYS) < 50_000:  # bounded: random keys from a fuzzer must not grow it forever
        _KEYS[k] = info
    return info


def _check_element(info: _KeyInfo, el: Any, problems: list[Problem], where: Any) -> None:
    if not isinstance(el, dict):
        problems.append(Problem(where(), "an element must be an object with a 'vr'"))
        return
    vr = el.get("vr")
    allowed = info.allowed
    if vr not in vrs.ALL_VRS:
        problems.append(Problem(where(), f"missing or unknown VR {vr!r}"))
        return
    if allowed and vr not in allowed and not (vr == "UN" or "OB" in allowed and vr == "OW"):
        problems.append(Problem(where(), f"VR {vr} is wrong for {dj.keyword(info.tag)}, expected {' or '.join(allowed)}"))
        return
    if len(el) > 2 or "Value" not in el:
        forms = [k for k in ("Value", "InlineBinary", "BulkDataURI") if k in el]
        if len(forms) > 1:
            problems.append(Problem(where(), f"an element may carry only one of Value, InlineBinary, BulkDataURI (has {forms})"))
            return
        extra = set(el) - _BODY_MEMBERS
        if extra:
            problems.append(Problem(where(), f"unexpected member(s) {sorted(extra)} in the element"))
        if "InlineBinary" in el:
            msg = vrs.check_inline_binary(el["InlineBinary"])
            if msg:
                problems.append(Problem(where(), msg))
            return
        if "BulkDataURI" in el:
            if not isinstance(el["BulkDataURI"], str):
                problems.append(Problem(where(), "BulkDataURI must be a string"))
            return
    values = el.get("Value")
    if values is None:
        return
    if not isinstance(values, list):
        problems.append(Problem(where(), "Value must be an array"))
        return
    if vr == "SQ":
        for n, item in enumerate(values):
            if not isinstance(item, dict):
                problems.append(Problem(f"{where()}[{n}]", "a sequence item must be an object"))
        return
    check = vrs.checker(vr)
    valid = True
    for n, v in enumerate(values):
        msg = check(v)
        if msg:
            valid = False
            problems.append(Problem(where() if len(values) == 1 else f"{where()}[{n}]", msg))
    allowed_values = info.enum
    if allowed_values and valid:  # a value its VR already refuses needs no second message
        for v in values:
            # an empty value is not a wrong one: whether it may be empty is its type's question
            if isinstance(v, str) and v.strip() and v.rstrip() not in allowed_values:
                shown = v if len(v) <= 64 else v[:61] + "..."
                problems.append(Problem(where(), f"{shown!r} is not one of {', '.join(sorted(allowed_values))}"))


# Deepest sequence nesting accepted. Table CC.2.5-3 nests 4 levels; a dataset nested much
# deeper cannot even be serialised again (orjson stops at 255 JSON levels, 3 per sequence
# level), so it is refused here rather than failing when the workitem is stored.
MAX_SEQUENCE_DEPTH = 32


Blanks = dict[int, tuple[str, ...]]


def check_structure(ds: Any, problems: list[Problem], blanks: Blanks | None = None) -> None:
    """Structure and value format of every element of a dataset and its items.

    ``blanks`` receives, by the ``id`` of each dataset, the keys of its elements that have
    no value (``key`` without a Value array, ``key=`` with one that holds no value): with
    the dataset's keys, all that the requirement walk reads of its elements (see
    "remembered shapes"), noted here so that walk need not look at each element again."""
    _structure(ds, (), problems, 0, "", {} if blanks is None else blanks)


def _structure(ds: Any, path: PathT, problems: list[Problem], depth: int, prefix: str, blanks: Blanks) -> None:
    if not isinstance(ds, dict):
        problems.append(Problem(prefix + format_path(path), "a dataset must be an object"))
        return
    if depth > MAX_SEQUENCE_DEPTH:
        problems.append(Problem(prefix + format_path(path), f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep"))
        return
    blank: list[str] = []
    fast_match = _FAST_MATCH
    for k, el in ds.items():
        info = _KEYS.get(k)
        if info is None:
            info = _key_info(k)
        if type(info) is not _KeyInfo:
            problems.append(Problem(prefix + format_path(path) + info.path, info.message, info.status))  # type: ignore[union-attr]
            continue
        # The common case, found valid without building anything (``_element_ok``, inline:
        # this runs for every element of every request); else the full check words
        # every problem.
        if type(el) is dict:
            vr = el.get("vr")
            if vr in info.vrs_ok:
                n = len(el)
                if n == 1:
                    blank.append(k)
                    continue
                values = el.get("Value")
                if n == 2 and type(values) is list:
                    if not values:
                        blank.append(k + "=")
                        continue
                    if vr == "SQ":
                        for item in values:
                            if type(item) is not dict:
                                break
                        else:
                            for i, item in enumerate(values):
                                _structure(item, path + (info.tag, -1 - i), problems, depth + 1, prefix, blanks)
                            continue
                    elif _values_ok(info, vr, values, fast_match.get(vr)):
                        first = values[0]
                        if (first is None or first == "") and not dj.has_value(el):
                            blank.append(k + "=")
                        continue
        tag = info.tag
        _check_element(info, el, problems, lambda: prefix + format_path(path + (tag,)))
        if not dj.has_value(el):
            blank.append(k + "=" if type(el) is dict and type(el.get("Value")) is list else k)
        if type(el) is dict and el.get("vr") == "SQ":
            items = el.get("Value")
            if type(items) is list:
                for i, item in enumerate(items):
                    if isinstance(item, dict):
                        _structure(item, path + (tag, -1 - i), problems, depth + 1, prefix, blanks)
    blanks[id(ds)] = tuple(blank)


def _values_ok(info: _KeyInfo, vr: str, values: list[Any], fast: Any) -> bool:
    """True only if ``_check_element`` would find nothing wrong with these values of a
    plain ``{"vr", "Value"}`` element of a VR that is not SQ; False = let it look. A
    string its VR's pattern (``fast``) matches is valid without a call into the checker."""
    for v in values:
        if (fast is None or type(v) is not str or fast(v) is None) and vrs.checker(vr)(v) is not None:
            return False
    allowed_values = info.enum
    if allowed_values:
        for v in values:
            if isinstance(v, str) and v.strip() and v.rstrip() not in allowed_values:
                return False
    return True


@dataclass(frozen=True)
class _Cond:
    """A rule's condition, parsed once: kind oneof / when / with."""

    kind: str
    keys: tuple[str, ...] = ()  # oneof: the group's keys; with: the sibling's key
    key: str = ""  # when: the attribute compared
    value: str = ""
    up: int = 0  # when=^T:V looks this many enclosing items up


_CONDS: dict[tuple[int, str], _Cond | None] = {}


def _cond(rule: AttributeRule, siblings: dict[int, AttributeRule]) -> _Cond | None:
    found = _CONDS.get((id(siblings), rule.condition), False)
    if found is not False:
        return found  # type: ignore[return-value]
    kind, _, arg = rule.condition.partition("=")
    cond: _Cond | None = None
    if kind == "oneof":
        cond = _Cond("oneof", tuple(dj.key(r.tag) for r in siblings.values() if r.condition == rule.condition))
    elif kind == "when":
        up = len(arg) - len(arg.lstrip("^"))
        tag_text, _, value = arg.lstrip("^").partition(":")
        cond = _Cond("when", key=dj.key(int(tag_text.strip("()").replace(",", ""), 16)), value=value, up=up)
    elif kind == "with":
        cond = _Cond("with", (dj.key(int(arg.strip("()").replace(",", ""), 16)),))
    _CONDS[(id(siblings), rule.condition)] = cond
    return cond


def _holds(rule: AttributeRule, ds: dj.Dataset, siblings: dict[int, AttributeRule],
           ancestors: tuple[dj.Dataset, ...] = ()) -> bool | None:
    """Whether a conditional requirement applies: True/False, None if undecidable.
    ``ancestors`` are the enclosing items, innermost first (for ``when=^T:V``)."""
    return _cond_holds(_cond(rule, siblings), ds, ancestors)


@dataclass(frozen=True)
class _Step:
    """One rule of a rules dict as ``_check_requirements`` reads it in one mode, with the
    usage columns and the condition looked up once (a workitem walks ~100 rules)."""

    tag: int
    rule: AttributeRule
    key: str
    t: str  # the SCU usage of this mode
    skip_absent: bool  # NA, 3, -, 2C: nothing to say when the attribute is absent
    conditional: bool
    oneof: bool
    cond: _Cond | None
    scp_keeps: bool  # SCP usage 1: an N-SET may not empty it


_STEPS: dict[tuple[int, str], tuple[tuple[dict[int, AttributeRule], tuple[_Step, ...]]]] = {}


def _steps(rules: dict[int, AttributeRule], mode: Mode) -> tuple[_Step, ...]:
    found = _STEPS.get((id(rules), mode))
    if found is not None and found[0][0] is rules:
        return found[0][1]
    steps = []
    for tag, rule in rules.items():
        usage = rule.create if mode == "create" else rule.set
        t = usage.scu
        conditional = t == "1C" or (t == "1" and rule.condition.startswith("when="))
        steps.append(_Step(tag, rule, rule.key, t, t in ("NA", "3", "-", "2C"), conditional,
                           rule.condition.startswith("oneof"), _cond(rule, rules) if conditional else None,
                           usage.scp == "1"))
    out = tuple(steps)
    _STEPS[(id(rules), mode)] = ((rules, out),)  # holds ``rules``, so its id is not reused
    return out


def _cond_holds(cond: _Cond | None, ds: dj.Dataset, ancestors: tuple[dj.Dataset, ...]) -> bool | None:
    """``_holds`` with the condition already parsed."""
    if cond is None:
        return None
    if cond.kind == "oneof":
        # "one of them shall be present" means present with a value (an empty Code Value
        # is no code value: PS3.3 Table 8.8-1)
        return not any(dj.has_value(ds.get(k)) for k in cond.keys)
    if cond.kind == "when":
        if cond.up:
            if len(ancestors) < cond.up:
                return None
            ds = ancestors[cond.up - 1]
        el = ds.get(cond.key)
        v = el.get("Value") if isinstance(el, dict) else None
        return bool(v) and isinstance(v, list) and v[0] == cond.value
    return dj.has_value(ds.get(cond.keys[0]))


def _walk_requirements(ds: dj.Dataset, rules: dict[int, AttributeRule], mode: Mode, path: PathT, out: Outcome,
                       parent_added: bool, ancestors: tuple[dj.Dataset, ...], blanks: Blanks) -> tuple[_Done, ...] | None:
    """The requirement checks of one dataset, descending into its items; returns what it
    did at this level (``_Done`` steps), or None if this level had a problem of its own."""
    done: list[_Done] = []
    clean = True
    reported_groups: set[str] = set()
    groups: dict[str, bool | None] = {}  # a oneof group is decided once per item
    create = mode == "create"
    has_value = dj.has_value
    for s in _steps(rules, mode):
        el = ds.get(s.key)
        present = el is not None
        t = s.t
        if not present and s.skip_absent:
            continue
        rule = s.rule
        tag = s.tag
        if t == "NA":
            why = "is not allowed in N-CREATE" if create else "may not be changed by Update (N-SET)"
            out.problems.append(Problem(format_path(path + (tag,)), f"{rule.name} {why}", "0105"))
            clean = False
            continue
        # PS3.4 Table CC.2.5-2b prints N-SET 1/1 for the value attributes of a content item
        # (DateTime, Date, ... Numeric Value), but each row's remark keeps "Required if Value
        # Type (0040,A040) is ...": an item carries the one value its Value Type names.
        if s.conditional:
            holds = groups.get(rule.condition, ...)
            if holds is ...:
                holds = _cond_holds(s.cond, ds, ancestors)
                if s.oneof:
                    groups[rule.condition] = holds
            required = holds is True
        else:
            required = t == "1"
        if required and not has_value(el):
            clean = False
            if s.oneof:
                if rule.condition in reported_groups:
                    continue
                reported_groups.add(rule.condition)
                group = [r for r in rules.values() if r.condition == rule.condition]
                names = ", ".join(r.name for r in group)
                sent_empty = [format_tag(r.tag) for r in group if dj.key(r.tag) in ds]
                out.problems.append(Problem(format_path(path) or "dataset", f"one of {names} is required"
                                            + (f" ({', '.join(sent_empty)} sent without a value)" if sent_empty else ""),
                                            "0121" if sent_empty else "0120"))
            else:
                out.problems.append(Problem(format_path(path + (tag,)), f"{rule.name} is required (type 1)" if not present
                                            else f"{rule.name} must have a value (type 1)",
                                            "0120" if not present else "0121"))
            continue
        if not present:
            if t == "2" and create and not parent_added:
                ds[s.key] = dj.element(rule.vrs[0])
                out.added.append(format_path(path + (tag,)))
                done.append((_ADD, s.key, tag, rule.vrs[0]))
            continue
        if not create and s.scp_keeps and not has_value(el):
            out.problems.append(Problem(format_path(path + (tag,)), f"{rule.name} cannot be emptied: the SCP must keep a value", "0121"))
            clean = False
            continue
        if rule.is_sequence and isinstance(el, dict):
            values = el.get("Value")
            if not isinstance(values, list):
                continue
            children = rule.children
            if create and children and rule.created_empty:
                if values:
                    out.problems.append(Problem(format_path(path + (tag,)), f"{rule.name} must be created empty", "0105"))
                    clean = False
                continue
            if children:
                done.append((_DESCEND, s.key, tag, children))
                for n, item in enumerate(values):
                    if isinstance(item, dict):
                        _check_requirements(item, children, mode, path + (tag, -1 - n), out,
                                            ancestors=(ds, *ancestors), blanks=blanks)
    return tuple(done) if clean else None


# ---------------------------------------------------------------- remembered shapes
# One level of the requirement walk (a dataset against its rules table, not its items)
# reads only: which attributes are present, which of them have no value (and whether those
# have a Value array), and what its "when=T:V" conditions say (on it or on an enclosing
# item). The structure check notes the blank elements as it passes them (``Blanks``), so
# a shape costs one ``tuple(ds)`` more. Workitems repeat those shapes — every
# workitem's top level, every coded item of a code sequence, every input series — so a
# shape that passed without a problem of its own is remembered with what the walk did
# there (type-2 elements added, sequences descended into, in rules order) and replayed for
# the next dataset of that shape; its items are still checked one by one. A shape with a
# problem is never remembered: every problem is found and worded by the walk itself.

_ADD, _DESCEND = 0, 1
_Done = tuple[int, str, int, Any]  # (_ADD, key, tag, VR) or (_DESCEND, key, tag, children rules)
_SHAPES: dict[tuple[Any, ...], tuple[_Done, ...]] = {}
_SHAPES_MAX = 4096  # bounded: a fuzzer's random datasets must not grow it forever
_WHENS: dict[tuple[int, str], tuple[_Cond, ...]] = {}


def _whens(rules: dict[int, AttributeRule], mode: Mode) -> tuple[_Cond, ...]:
    """The "when" conditions of a rules table (a shape carries what each says)."""
    key = (id(rules), mode)  # ``_steps`` keeps ``rules`` alive, so its id is not reused
    found = _WHENS.get(key)
    if found is None:
        found = _WHENS[key] = tuple(s.cond for s in _steps(rules, mode) if s.cond is not None and s.cond.kind == "when")
    return found


def _blank_keys(ds: dj.Dataset) -> tuple[str, ...] | None:
    """``ds``'s blanks as ``check_structure`` notes them, for a dataset it did not see;
    None for an element that is not a plain object with a list of values (a dataset
    with one is not remembered)."""
    blank: list[str] = []
    for k, el in ds.items():
        if type(el) is not dict:
            return None
        v = el.get("Value")
        if v is not None and type(v) is not list:
            return None
        if not dj.has_value(el):
            blank.append(k if v is None else k + "=")
    return tuple(blank)


def _shape(ds: dj.Dataset, rules: dict[int, AttributeRule], mode: Mode,
           ancestors: tuple[dj.Dataset, ...], blanks: Blanks) -> tuple[Any, ...] | None:
    """Everything one level of the walk reads — which elements ``ds`` has, which of them
    have no value (``blanks``), and what its "when" conditions say (on it or on enclosing
    items, "when=^T:V") — or None (not remembered)."""
    blank = blanks.get(id(ds))
    if blank is None:
        blank = _blank_keys(ds)
        if blank is None:
            return None
    whens = _whens(rules, mode)
    if not whens:
        return (id(rules), mode, tuple(ds), blank)
    return (id(rules), mode, tuple(ds), blank, *[_cond_holds(cond, ds, ancestors) for cond in whens])


def _check_requirements(ds: dj.Dataset, rules: dict[int, AttributeRule], mode: Mode, path: PathT,
                        out: Outcome, parent_added: bool = False, ancestors: tuple[dj.Dataset, ...] = (),
                        blanks: Blanks | None = None) -> None:
    """Table CC.2.5-3's requirements on ``ds`` and its items: a remembered shape's steps
    replayed, else the walk (which remembers the shape if it passed)."""
    if blanks is None:
        blanks = {}
    shape = None if parent_added else _shape(ds, rules, mode, ancestors, blanks)
    if shape is not None:
        done = _SHAPES.get(shape)
        if done is not None:
            for kind, key, tag, arg in done:
                if kind == _ADD:
                    ds[key] = dj.element(arg)
                    out.added.append(format_path(path + (tag,)))
                else:
                    enclosing = (ds, *ancestors)
                    for n, item in enumerate(ds[key]["Value"]):
                        if type(item) is dict:
                            _check_requirements(item, arg, mode, (*path, tag, -1 - n), out, False, enclosing, blanks)
            return
    walked = _walk_requirements(ds, rules, mode, path, out, parent_added, ancestors, blanks)
    if shape is not None and walked is not None:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[shape] = walked


def check(ds: dj.Dataset, mode: Mode) -> Outcome:
    """Check a dataset for N-CREATE or N-SET. Adds the empty type-2 elements an N-CREATE
    lacks (the SCP's coercion, reported in ``added``) and reports every problem found."""
    if _schema.accepts(ds, mode):  # the compiled table's fast "yes" (upsrs/schema.py)
        if _CROSSCHECK:
            _crosscheck(ds, mode)
        return Outcome()
    return _check(ds, mode)


def _check(ds: dj.Dataset, mode: Mode) -> Outcome:
    out = Outcome()
    blanks: Blanks = {}
    check_structure(ds, out.problems, blanks)
    if out.problems:
        return out
    _check_requirements(ds, ups_attributes(), mode, (), out, blanks=blanks)
    return out


def _crosscheck(ds: dj.Dataset, mode: Mode) -> None:
    """The engine on a dataset the schema accepted (a copy: the engine adds to what it
    checks), which must agree: no problem, nothing added."""
    found = _check(copy.deepcopy(ds), mode)
    if found.problems or found.added:
        raise AssertionError(f"upsrs/schema.py accepted a dataset the validation engine does not ({mode}): "
                             f"{[str(p) for p in found.problems]} added {found.added}")


def final_state_problems(ds: dj.Dataset, target: str) -> list[Problem]:
    """Attributes that lack a value for ``target`` (COMPLETED or CANCELED): Final column
    R, P (COMPLETED) and X (CANCELED). A type-2 attribute (e.g. Output Information Sequence,
    which may have no items) needs only to be present. RC is conditional on facts the
    dataset cannot show ("if known") and is not enforced."""
    needed = {"R"} | ({"P"} if target == "COMPLETED" else {"X"})
    problems: list[Problem] = []

    def visit(item: dj.Dataset, rules: dict[int, AttributeRule], path: str) -> None:
        for tag, rule in rules.items():
            if rule.final not in needed:
                continue
            here = f"{path}{format_tag(tag)}"
            el = item.get(dj.key(tag))
            type2 = rule.set.scu == "2"
            if el is None or (not type2 and not dj.has_value(el)):
                problems.append(Problem(here, f"{rule.name} needs a value before the workitem is {target}", "C304"))
                continue
            if rule.is_sequence and rule.children and any(c.final in needed for c in rule.children.values()):
                seq_items = dj.items(item, tag)
                if seq_items:
                    visit(seq_items[0], rule.children, f"{here}[0]")

    visit(ds, ups_attributes(), "")
    return problems


def creatable(ds: dj.Dataset) -> dj.Dataset:
    """The part of a stored workitem a new N-CREATE may carry: what rescheduling copies
    into a replacement (PS3.4 CC.2.5: Replaced Procedure Step Sequence). Attributes the
    table forbids at N-CREATE are dropped; sequences that must be created empty (Progress
    Information, Performed Procedure) are emptied; unknown/private attributes are kept."""
    rules = ups_attributes()
    out: dj.Dataset = {}
    for k, el in ds.items():
        rule = rules.get(int(k, 16))
        if rule is None:
            out[k] = el
        elif rule.created_empty:
            out[k] = {"vr": "SQ"}
        elif not rule.create.not_allowed:
            out[k] = el
    return out


# After everything above: upsrs.schema compiles the table through ``_steps``.
from upsrs import schema as _schema  # noqa: E402

_CROSSCHECK = os.environ.get("AIW_VALIDATION_CROSSCHECK", "") not in ("", "0")
