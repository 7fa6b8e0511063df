"""Which series of a study a procedure takes as inputs, and whether it is STAT.

A study that does not fit is refused with the reason for each series, so the person at
the console sees "series 3 'T1 SAG': modality CT, not MR" rather than "no match".
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from pydicom.datadict import tag_for_keyword

from requester_cli.builder import SeriesRef, StudyRef
from requester_cli.templates import InputRules, ProcedureTemplate
from upsrs import dicomjson as dj

Dataset = dict[str, Any]


class NoMatchingSeries(ValueError):
    """No series of the study satisfies the procedure's input rules."""


def rejection(series: SeriesRef, rules: InputRules) -> str | None:
    """Why ``series`` is not an input (None: it is)."""
    if series.modality.upper() != rules.modality.upper():
        return f"modality {series.modality or '(none)'}, not {rules.modality}"
    if rules.series_description and not re.search(rules.series_description, series.description):
        return f"description {series.description!r} does not match /{rules.series_description}/"
    if rules.sop_classes:
        wrong = {c for c, _ in series.instances if c not in rules.sop_classes}
        if wrong:
            return f"SOP class {sorted(wrong)[0]} is not one of the procedure's"
    if len(series.instances) < rules.min_instances:
        return f"{len(series.instances)} instances, fewer than {rules.min_instances}"
    return None


def input_series(study: StudyRef, template: ProcedureTemplate) -> list[SeriesRef]:
    """The inputs: matching series, largest first, at most ``max_series``."""
    rules = template.inputs
    ok = [s for s in study.series if rejection(s, rules) is None]
    if not ok:
        why = "; ".join(f"series {s.series_uid} {s.description!r}: {rejection(s, rules)}" for s in study.series)
        raise NoMatchingSeries(f"no series of study {study.study_uid} matches procedure {template.name!r} "
                               f"({why or 'the study has no series'})")
    ok.sort(key=lambda s: -len(s.instances))  # stable: Series Number order among equals
    return ok[:rules.max_series]


def _strings(ds: Dataset, keyword: str) -> list[str]:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return []
    out = []
    for v in dj.values(ds, tag):
        out.append(str(v.get("Alphabetic", "")) if isinstance(v, dict) else str(v))
    return out


def stat_reason(template: ProcedureTemplate, instances: Sequence[Dataset], inputs: Sequence[SeriesRef]) -> str | None:
    """The first STAT rule that holds, as 'Attribute ~ /pattern/ (value)' (None: routine).
    Study attributes are read from any instance; series attributes from the inputs'."""
    input_uids = {s.series_uid for s in inputs}
    considered = [ds for ds in instances if dj.first(ds, 0x0020000E) in input_uids] or list(instances[:1])
    for rule in template.stat:
        for ds in considered:
            for value in _strings(ds, rule.attribute):
                if re.search(rule.pattern, value):
                    return f"{rule.attribute} ~ /{rule.pattern}/ ({value!r})"
    return None
