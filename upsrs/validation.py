"""The one engine that checks workitems against Table CC.2.5-3 (``tables.ups_attributes``).

It answers three questions, all from the table's columns:
  * is this dataset acceptable for N-CREATE / N-SET (``check``)?
  * which type-2 attributes must the SCP add empty (``Outcome.added``)?
  * does the workitem meet the final-state requirements for COMPLETED / CANCELED
    (``final_state_problems``)?
"""

from __future__ import annotations

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


def check_element(path: str, tag: int, el: Any, problems: list[Problem]) -> None:
    """Structure and value format of one element (PS3.18 F.2), whatever table it is in."""
    if not isinstance(el, dict):
        problems.append(Problem(path, "an element must be an object with a 'vr'"))
        return
    vr = el.get("vr")
    if vr not in vrs.ALL_VRS:
        problems.append(Problem(path, f"missing or unknown VR {vr!r}"))
        return
    allowed = dj.dictionary_vrs(tag)
    if allowed and vr not in allowed and not (vr == "UN" or "OB" in allowed and vr == "OW"):
        problems.append(Problem(path, f"VR {vr} is wrong for {dj.keyword(tag)}, expected {' or '.join(allowed)}"))
        return
    forms = [k for k in ("Value", "InlineBinary", "BulkDataURI") if k in el]
    if len(forms) > 1:
        problems.append(Problem(path, f"an element may carry only one of Value, InlineBinary, BulkDataURI (has {forms})"))
        return
    extra = set(el) - {"vr", "Value", "InlineBinary", "BulkDataURI"}
    if extra:
        problems.append(Problem(path, f"unexpected member(s) {sorted(extra)} in the element"))
    if "InlineBinary" in el:
        msg = vrs.check_inline_binary(el["InlineBinary"])
        if msg:
            problems.append(Problem(path, msg))
        return
    if "BulkDataURI" in el:
        if not isinstance(el["BulkDataURI"], str):
            problems.append(Problem(path, "BulkDataURI must be a string"))
        return
    values = el.get("Value")
    if values is None:
        return
    if not isinstance(values, list):
        problems.append(Problem(path, "Value must be an array"))
        return
    if vr == "SQ":
        for n, item in enumerate(values):
            if not isinstance(item, dict):
                problems.append(Problem(f"{path}[{n}]", "a sequence item must be an object"))
        return
    for n, v in enumerate(values):
        msg = vrs.check_value(vr, v)
        if msg:
            problems.append(Problem(path if len(values) == 1 else f"{path}[{n}]", msg))
    allowed_values = enumerations().get(tag)
    if allowed_values:
        for v in values:
            # an empty value is not a wrong one: whether it may be empty is its type's question
            if isinstance(v, str) and v.strip() and v.rstrip() not in allowed_values:
                problems.append(Problem(path, f"{v!r} is not one of {', '.join(sorted(allowed_values))}"))


# Deepest sequence nesting accepted. Table CC.2.5-3 nests 4 levels; a dataset nested much
# deeper cannot even be serialised again (orjson stops at 255 JSON levels, 3 per sequence
# level), so it is refused here rather than failing when the workitem is stored.
MAX_SEQUENCE_DEPTH = 32


def _check_structure(ds: Any, path: str, problems: list[Problem], depth: int = 0) -> None:
    if not isinstance(ds, dict):
        problems.append(Problem(path, "a dataset must be an object"))
        return
    if depth > MAX_SEQUENCE_DEPTH:
        problems.append(Problem(path, f"sequences are nested more than {MAX_SEQUENCE_DEPTH} levels deep"))
        return
    for k, el in ds.items():
        if len(k) != 8 or any(c not in "0123456789ABCDEFabcdef" for c in k):
            problems.append(Problem(path, f"property {k!r} is not 8 hexadecimal digits"))
            continue
        if k != k.upper():
            problems.append(Problem(path, f"property {k!r} must be upper-case hexadecimal"))
            continue
        tag = int(k, 16)
        here = f"{path}{format_tag(tag)}"
        if tag >> 16 == 0 or tag >> 16 in (0x0002,):
            problems.append(Problem(here, "command and file meta elements do not belong in a dataset", "0105"))
            continue
        if tag & 0xFFFF == 0:
            problems.append(Problem(here, "group length elements are not allowed in DICOM JSON", "0105"))
            continue
        check_element(here, tag, el, problems)
        if isinstance(el, dict) and el.get("vr") == "SQ" and isinstance(el.get("Value"), list):
            for n, item in enumerate(el["Value"]):
                if isinstance(item, dict):
                    _check_structure(item, f"{here}[{n}]", problems, depth + 1)


def _holds(rule: AttributeRule, ds: dj.Dataset, siblings: dict[int, AttributeRule],
           ancestors: tuple[dj.Dataset, ...] = ()) -> bool | None:
    """Whether a conditional requirement applies: True/False, None if undecidable.
    ``ancestors`` are the enclosing items, innermost first (for ``when=^T:V``)."""
    kind, _, arg = rule.condition.partition("=")
    if kind == "oneof":
        # "one of them shall be present" means present with a value (an empty Code Value
        # is no code value: PS3.3 Table 8.8-1)
        group = [r.tag for r in siblings.values() if r.condition == rule.condition]
        return not any(dj.has_value(ds.get(dj.key(t))) for t in group)
    if kind == "when":
        up = len(arg) - len(arg.lstrip("^"))
        tag_text, _, value = arg.lstrip("^").partition(":")
        tag = int(tag_text.strip("()").replace(",", ""), 16)
        if up:
            if len(ancestors) < up:
                return None
            ds = ancestors[up - 1]
        return dj.first(ds, tag) == value
    if kind == "with":
        tag = int(arg.strip("()").replace(",", ""), 16)
        return dj.has_value(ds.get(dj.key(tag)))
    return None


def _check_requirements(ds: dj.Dataset, rules: dict[int, AttributeRule], mode: Mode, path: str,
                        out: Outcome, parent_added: bool = False, ancestors: tuple[dj.Dataset, ...] = ()) -> None:
    reported_groups: set[str] = set()
    for tag, rule in rules.items():
        usage = rule.create if mode == "create" else rule.set
        t = usage.scu
        k = dj.key(tag)
        here = f"{path}{format_tag(tag)}"
        el = ds.get(k)
        present = el is not None
        if t == "NA":
            if present:
                why = ("is not allowed in N-CREATE" if mode == "create"
                       else "may not be changed by Update (N-SET)")
                out.problems.append(Problem(here, f"{rule.name} {why}", "0105"))
            continue
        # PS3.4 Table CC.2.5-2b prints N-SET 1/1 for the value attributes of a content item
        # (DateTime, Date, ... Numeric Value), but each row's remark keeps "Required if Value
        # Type (0040,A040) is ...": an item carries the one value its Value Type names.
        conditional = t == "1C" or (t == "1" and rule.condition.startswith("when="))
        required = (t == "1" and not conditional) or (conditional and _holds(rule, ds, rules, ancestors) is True)
        if required and not dj.has_value(el):
            if rule.condition.startswith("oneof"):
                if rule.condition in reported_groups:
                    continue
                reported_groups.add(rule.condition)
                group = [r for r in rules.values() if r.condition == rule.condition]
                names = ", ".join(r.name for r in group)
                sent_empty = [format_tag(r.tag) for r in group if dj.key(r.tag) in ds]
                out.problems.append(Problem(path or "dataset", f"one of {names} is required"
                                            + (f" ({', '.join(sent_empty)} sent without a value)" if sent_empty else ""),
                                            "0121" if sent_empty else "0120"))
            else:
                out.problems.append(Problem(here, f"{rule.name} is required (type 1)" if not present
                                            else f"{rule.name} must have a value (type 1)",
                                            "0120" if not present else "0121"))
            continue
        if mode == "set" and present and usage.scp == "1" and not dj.has_value(el):
            out.problems.append(Problem(here, f"{rule.name} cannot be emptied: the SCP must keep a value", "0121"))
            continue
        if t == "2" and not present and mode == "create" and not parent_added:
            ds[k] = dj.element(rule.vrs[0])
            out.added.append(here)
            continue
        if present and rule.is_sequence and isinstance(el, dict) and isinstance(el.get("Value"), list):
            children = rule.children
            if mode == "create" and children and all(c.create.not_allowed for c in children.values()):
                if el["Value"]:
                    out.problems.append(Problem(here, f"{rule.name} must be created empty", "0105"))
                continue
            for n, item in enumerate(el["Value"]):
                if isinstance(item, dict) and children:
                    _check_requirements(item, children, mode, f"{here}[{n}]", out, ancestors=(ds, *ancestors))


def check(ds: dj.Dataset, mode: Mode) -> Outcome:
    """Check a dataset for N-CREATE or N-SET. Adds the empty type-2 elements an N-CREATE
    lacks (the SCP's coercion, reported in ``added``) and reports every problem found."""
    out = Outcome()
    _check_structure(ds, "", out.problems)
    if out.problems:
        return out
    _check_requirements(ds, ups_attributes(), mode, "", out)
    return out


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
