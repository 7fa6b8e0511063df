"""Procedure templates: which AI task a study becomes, read from TOML.

Integration engineers describe each AI procedure once (coded workitem code, station,
worklist label, priority, input rules, typed parameters, STAT rules) instead of writing
glue. A template is validated whole on load and every message names the file, the
procedure and the field, because a typo found at 3 a.m. by a trigger is a missed study.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.datadict import tag_for_keyword

from requester_cli.builder import CodeT, Parameter, Procedure

SAMPLE = Path(__file__).resolve().parent / "templates" / "aiw-reference.toml"
PRIORITIES = ("HIGH", "MEDIUM", "LOW")


class TemplateError(ValueError):
    """An invalid template file; the message names file, procedure and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Code(_Strict):
    value: str = Field(min_length=1, max_length=64)
    scheme: str = Field(min_length=1, max_length=16)
    meaning: str = Field(min_length=1, max_length=64)

    def tuple(self) -> CodeT:
        return (self.value, self.scheme, self.meaning)


def _keyword(name: str) -> str:
    if tag_for_keyword(name) is None:
        raise ValueError(f"{name!r} is not a DICOM attribute keyword")
    return name


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


class InputRules(_Strict):
    """Which series of a study are the inputs. Every given rule must hold for a series."""

    modality: str = Field(min_length=1, max_length=16)
    series_description: str | None = None  # regular expression, searched (use ^...$ to anchor)
    sop_classes: tuple[str, ...] = ()  # empty: any
    min_instances: int = Field(default=1, ge=1)
    max_series: int = Field(default=1, ge=1)  # the largest matching series first
    prior: Literal["none", "optional"] = "none"  # whether `--with-prior` / triggers look for one

    _re = field_validator("series_description")(lambda v: _regex(v) if v is not None else v)


class StatRule(_Strict):
    """HIGH priority when ``attribute`` of the study or of an input series matches ``pattern``."""

    attribute: str
    pattern: str

    _kw = field_validator("attribute")(_keyword)
    _re = field_validator("pattern")(_regex)


class ParameterSpec(_Strict):
    code: Code
    type: Literal["numeric", "text", "code"]
    value: Union[float, int, str, Code]
    unit: Code | None = None  # UCUM, numeric parameters only
    minimum: float | None = None
    maximum: float | None = None

    @model_validator(mode="after")
    def _typed(self) -> "ParameterSpec":
        self.coerce(self.value)
        if self.unit is not None and self.type != "numeric":
            raise ValueError("unit: only numeric parameters have a unit")
        if self.type == "numeric" and self.unit is None:
            raise ValueError("unit: a numeric parameter needs its UCUM unit (use value '1' for no unit)")
        return self

    def coerce(self, raw: Any) -> float | str | CodeT:
        """``raw`` (from the file or from ``--param name=value``) as this parameter's type."""
        name = self.code.value
        if self.type == "numeric":
            try:
                number = float(raw) if not isinstance(raw, bool) and not isinstance(raw, Code) else math.nan
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise ValueError(f"value: parameter {name!r} is numeric, got {raw!r}")
            if self.minimum is not None and number < self.minimum:
                raise ValueError(f"value: parameter {name!r} = {number} is below its minimum {self.minimum}")
            if self.maximum is not None and number > self.maximum:
                raise ValueError(f"value: parameter {name!r} = {number} is above its maximum {self.maximum}")
            return number
        if self.type == "text":
            if not isinstance(raw, str):
                raise ValueError(f"value: parameter {name!r} is text, got {raw!r}")
            return raw
        if isinstance(raw, Code):
            return raw.tuple()
        if isinstance(raw, str) and raw.count("^") == 2:  # value^scheme^meaning on the command line
            v, s, m = raw.split("^")
            return Code(value=v, scheme=s, meaning=m).tuple()
        raise ValueError(f"value: parameter {name!r} is a code ({{value, scheme, meaning}} or "
                         f"'value^scheme^meaning'), got {raw!r}")


class ProcedureTemplate(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    label: str = Field(min_length=1, max_length=64)  # Procedure Step Label
    code: Code  # Scheduled Workitem Code Sequence
    station: Code | None = None  # Scheduled Station Name Code Sequence
    worklist_label: str = Field(default="", max_length=64)
    priority: Literal["HIGH", "MEDIUM", "LOW"] = "MEDIUM"
    expected_minutes: float | None = Field(default=None, gt=0)
    inputs: InputRules
    parameters: tuple[ParameterSpec, ...] = ()
    stat: tuple[StatRule, ...] = ()

    @model_validator(mode="after")
    def _unique_parameters(self) -> "ProcedureTemplate":
        seen: set[str] = set()
        for p in self.parameters:
            if p.code.value in seen:
                raise ValueError(f"parameters: {p.code.value!r} is given twice")
            seen.add(p.code.value)
        return self

    def procedure(self, priority: str | None = None, overrides: dict[str, str] | None = None) -> Procedure:
        """The builder's Procedure; ``overrides`` (name -> raw value) replace parameter
        defaults, checked against their type."""
        overrides = dict(overrides or {})
        params = []
        for spec in self.parameters:
            raw = overrides.pop(spec.code.value, spec.value)
            try:
                value = spec.coerce(raw)
            except ValueError as exc:
                raise TemplateError(f"procedure {self.name!r}: {exc}") from None
            params.append(Parameter(spec.code.tuple(), value, spec.unit.tuple() if spec.unit else None))
        if overrides:
            known = ", ".join(p.code.value for p in self.parameters) or "none"
            raise TemplateError(f"procedure {self.name!r} has no parameter {', '.join(sorted(overrides))} "
                                f"(its parameters: {known})")
        return Procedure(self.code.tuple(), self.label, self.station.tuple() if self.station else None,
                         self.worklist_label, priority or self.priority, tuple(params), self.expected_minutes)


class TemplateFile(_Strict):
    procedure: tuple[ProcedureTemplate, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "TemplateFile":
        names = [p.name for p in self.procedure]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"procedure names must be unique; repeated: {', '.join(sorted(dup))}")
        return self


def _where(data: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """'procedure "x", field inputs.modality' from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "procedure" and isinstance(loc[1], int):
        procs = data.get("procedure") or []
        name = procs[loc[1]].get("name") if loc[1] < len(procs) and isinstance(procs[loc[1]], dict) else None
        who = f"procedure {name!r}" if name else f"procedure #{loc[1] + 1}"
        rest = [str(x) if not isinstance(x, int) else f"[{x}]" for x in loc[2:] if not str(x).startswith("function-")]
        field = ".".join(rest).replace(".[", "[") or "(whole procedure)"
        return f"{who}, field {field}"
    return f"field {'.'.join(map(str, loc)) or '(top level)'}"


def load(path: Path | str) -> list[ProcedureTemplate]:
    """Read and validate a template file; TemplateError names file, procedure and field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"{path}: cannot read the template file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"{path}: not valid TOML: {exc}") from None
    try:
        return list(TemplateFile.model_validate(data).procedure)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_where(data, tuple(err['loc']))}: {msg}")
        raise TemplateError(f"{path}: {'; '.join(problems)}") from None


def find(templates: list[ProcedureTemplate], name: str | None) -> ProcedureTemplate:
    """The procedure called ``name`` (None: the only one)."""
    if name is None:
        if len(templates) == 1:
            return templates[0]
        raise TemplateError(f"several procedures are defined ({', '.join(t.name for t in templates)}); "
                            "choose one with --procedure")
    for t in templates:
        if t.name == name or t.code.value == name:
            return t
    raise TemplateError(f"no procedure {name!r} (defined: {', '.join(t.name for t in templates)})")
