"""Loads the UPS standard tables kept as data files in ``upsrs/standard/``.

The tables are the standard's text, transcribed once; the engines in ``validation``,
``states`` and ``matching`` interpret them. A change of edition is a change of data.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from upsrs.dicomjson import dictionary_vrs

_LINE = re.compile(r"^(?P<depth>>*)\((?P<g>[0-9A-F]{4}),(?P<e>[0-9A-F]{4})\)\s+(?P<name>[^|]+)\|(?P<cols>.*)$")
_INCLUDE = re.compile(r"^(?P<depth>>*)include\s+(?P<macro>\w+)\s*$")
_SECTION = re.compile(r"^\[(macro|table)\s+(\w+)\]")


@dataclass(frozen=True)
class Usage:
    """An SCU/SCP requirement pair such as ``1/1``, ``3/2``, ``-/1``; ``NA`` = not allowed."""

    scu: str
    scp: str

    @property
    def not_allowed(self) -> bool:
        return self.scu == "NA"

    @classmethod
    def parse(cls, text: str) -> "Usage":
        text = text.strip()
        if text in ("NA", ""):
            return cls("NA" if text else "-", "NA" if text else "-")
        if "/" in text:
            scu, scp = text.split("/", 1)
            return cls(scu, scp)
        return cls(text, text)


@dataclass
class AttributeRule:
    """One row of Table CC.2.5-3 (or of a macro it includes)."""

    tag: int
    name: str
    vrs: tuple[str, ...]
    create: Usage
    set: Usage
    final: str
    get: Usage
    match: str
    ret: str
    condition: str = ""
    children: dict[int, "AttributeRule"] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key = f"{self.tag:08X}"  # its DICOM JSON property name
        self.is_sequence = "SQ" in self.vrs

    @functools.cached_property
    def created_empty(self) -> bool:
        """A sequence N-CREATE must create empty: none of its item attributes is allowed."""
        return bool(self.children) and all(c.create.not_allowed for c in self.children.values())


def _columns(cols: str) -> tuple[list[str], str]:
    parts = [p.strip() for p in cols.split("|")]
    parts += [""] * (7 - len(parts))
    rule = parts[6].split(";")[0].strip() if parts[6] else ""
    if not re.match(r"^(oneof|when|with)=", rule):
        rule = ""
    return parts[:6], rule


def _parse(text: str) -> dict[str, list[tuple[int, object]]]:
    """Sections of (depth, AttributeRule | macro name) rows, in file order."""
    sections: dict[str, list[tuple[int, object]]] = {}
    current: list[tuple[int, object]] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _SECTION.match(line)
        if m:
            current = sections.setdefault(m.group(2), [])
            continue
        if current is None:
            raise ValueError(f"attributes.txt:{lineno}: row outside a [table]/[macro] section")
        m = _INCLUDE.match(line)
        if m:
            current.append((len(m["depth"]), m["macro"]))
            continue
        m = _LINE.match(line)
        if not m:
            raise ValueError(f"attributes.txt:{lineno}: cannot read {raw!r}")
        tag = int(m["g"] + m["e"], 16)
        (create, set_, final, get, match, ret), rule = _columns(m["cols"])
        vrs = dictionary_vrs(tag)
        if not vrs:
            raise ValueError(f"attributes.txt:{lineno}: {m['name'].strip()} {m['g']},{m['e']} is not in the data dictionary")
        row = AttributeRule(
            tag, m["name"].strip(), vrs, Usage.parse(create), Usage.parse(set_), final.strip(" -") or "O",
            Usage.parse(get), match or "-", ret or "-", rule,
        )
        current.append((len(m["depth"]), row))
    return sections


def _build(rows: list[tuple[int, object]], sections: dict, base: int, into: dict[int, AttributeRule],
           stack: list[dict[int, AttributeRule]] | None = None) -> None:
    # stack[d] is the dict that receives rows of depth d
    stack = stack if stack is not None else [into]
    last: dict[int, AttributeRule] = {}
    for depth, row in rows:
        d = base + depth
        if d >= len(stack) + 1 or d < 0:
            raise ValueError(f"bad nesting at depth {d}")
        target = stack[d] if d < len(stack) else None
        if target is None:
            parent = last.get(d - 1)
            if parent is None:
                raise ValueError(f"nested row without a sequence above it (depth {d})")
            target = parent.children
            stack.append(target)
        del stack[d + 1:]
        if isinstance(row, str):
            _build(sections[row], sections, d, target, stack)
            del stack[d + 1:]
            continue
        rule = dataclasses.replace(row, children={})  # macros are reused: copy rows
        target[rule.tag] = rule
        last[d] = rule
        if rule.is_sequence:
            stack.append(rule.children)
        for k in [k for k in last if k > d]:
            del last[k]


@cache
def ups_attributes() -> dict[int, AttributeRule]:
    """Table CC.2.5-3 with every macro expanded: top-level tag -> rule (with children)."""
    text = resources.files("upsrs.standard").joinpath("attributes.txt").read_text("utf-8")
    sections = _parse(text)
    table: dict[int, AttributeRule] = {}
    _build(sections["UPS"], sections, 0, table)
    return table


@cache
def enumerations() -> dict[int, frozenset[str]]:
    text = resources.files("upsrs.standard").joinpath("enumerations.txt").read_text("utf-8")
    out: dict[int, frozenset[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            tag, vals = line.split("|", 1)
            out[int(tag.strip().strip("()").replace(",", ""), 16)] = frozenset(v.strip() for v in vals.split(","))
    return out


def read_rows(filename: str) -> list[list[str]]:
    """Rows of a ``|``-separated data file, comments and blank lines dropped."""
    text = resources.files("upsrs.standard").joinpath(filename).read_text("utf-8")
    return [[c.strip() for c in line.split("|")] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
