"""Remembered shapes (``validation._SHAPES``): checking a dataset whose levels were seen
before gives exactly what the full walk gives — the same problems, worded the same, the
same type-2 elements added in the same order — on workitems mutated at random."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factory import code, performed, progress, sq, v, workitem
from upsrs import validation

BASES: list[tuple[dict[str, Any], str]] = [
    (workitem(), "create"),
    (workitem(station=None, series_uids=("2.25.1", "2.25.2")), "create"),
    ({**workitem(), "00741002": sq({"00741004": v("DS", "5")})}, "create"),  # must be created empty
    (performed(), "set"),
    (progress(50, "half"), "set"),
    ({**progress(10), **performed()}, "set"),
    ({"00404018": sq(code("A", "B", "C"), {"00080102": v("SH", "X")})}, "set"),
    ({"0040A370": sq({"00080050": v("SH", "ACC"), "00080051": sq({"00400031": v("UT", "x")})})}, "set"),
    ({**workitem(), "00741210": sq({"0040A040": v("CS", "TEXT"), "0040A043": sq(code("P1", "99X", "param")),
                                    "0040A160": v("UT", "x")})}, "create"),
]
EMPTIES = [lambda vr: {"vr": vr}, lambda vr: {"vr": vr, "Value": []}, lambda vr: {"vr": vr, "Value": [""]},
           lambda vr: {"vr": vr, "Value": [None]}]


def _datasets(ds: Any) -> list[dict[str, Any]]:
    """Every dataset in ``ds``: itself and its sequence items, depth first."""
    out = [ds]
    for el in ds.values():
        if isinstance(el, dict) and el.get("vr") == "SQ" and isinstance(el.get("Value"), list):
            for item in el["Value"]:
                if isinstance(item, dict):
                    out += _datasets(item)
    return out


@st.composite
def mutated(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    base, mode = draw(st.sampled_from(BASES))
    ds = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 4))):
        target = draw(st.sampled_from(_datasets(ds)))
        keys = list(target)
        action = draw(st.sampled_from(["drop", "empty", "dup", "add", "mode", "retype"]))
        if action == "drop" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif action == "empty" and keys:
            k = draw(st.sampled_from(keys))
            target[k] = draw(st.sampled_from(EMPTIES))(target[k].get("vr", "UN"))
        elif action == "dup" and keys:
            k = draw(st.sampled_from(keys))
            if target[k].get("vr") == "SQ" and target[k].get("Value"):
                target[k]["Value"].append(copy.deepcopy(target[k]["Value"][0]))
        elif action == "add":
            k, el = draw(st.sampled_from([("00081195", v("UI", "2.25.9")), ("00741000", v("CS", "SCHEDULED")),
                                          ("00080104", v("LO", "meaning")), ("00080100", v("SH", "C1")),
                                          ("0040A040", v("CS", "TEXT")), ("0040A160", v("UT", "t")),
                                          ("00741002", sq()), ("00404018", sq(code("Z", "Y", "W"))),
                                          ("00091010", v("LO", "private"))]))
            target[k] = el
        elif action == "retype":  # what "when=" and "when=^" conditions look at
            for k, values in (("0040E020", ["DICOM", "CDA", "", "X"]), ("0040A040", ["TEXT", "CODE", "NUMERIC", "DATE"])):
                if k in target:
                    target[k] = v("CS", draw(st.sampled_from(values)))
        elif action == "mode":
            mode = "set" if mode == "create" else "create"
    return ds, mode


def _outcome(ds: dict[str, Any], mode: str) -> tuple[Any, ...]:
    out = validation.check(ds, mode)  # type: ignore[arg-type]
    return [(p.path, p.message, p.status) for p in out.problems], list(out.added), ds


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_remembered_shapes_give_what_the_walk_gives(case: tuple[dict[str, Any], str]) -> None:
    ds, mode = case
    walked = _outcome(copy.deepcopy(ds), mode)
    shape, validation._shape = validation._shape, lambda *a: None  # type: ignore[assignment]
    try:
        plain = _outcome(copy.deepcopy(ds), mode)
    finally:
        validation._shape = shape  # type: ignore[assignment]
    again = _outcome(copy.deepcopy(ds), mode)  # every clean level of it is remembered now
    assert walked == plain == again


def test_a_remembered_shape_is_replayed() -> None:
    validation._SHAPES.clear()
    first = workitem()
    first.pop("00380010")  # Admission ID, type 2: added empty
    assert validation.check(first, "create").added == ["(0038,0010)"]
    remembered = len(validation._SHAPES)
    assert remembered > 3
    ds = workitem(patient_id="PAT-9", accession="ACC-9")  # other values, same shapes
    ds.pop("00380010")
    out = validation.check(ds, "create")
    assert len(validation._SHAPES) == remembered and out.ok and out.added == ["(0038,0010)"]
    assert ds["00380010"] == {"vr": "LO"}


@pytest.mark.parametrize("mode", ["create", "set"])
def test_a_level_with_a_problem_is_never_remembered(mode: str) -> None:
    validation._SHAPES.clear()
    ds = {**workitem(), "00404018": sq({"00080102": v("SH", "99AIW")})}  # a code item without a code value
    first = [str(p) for p in validation.check(copy.deepcopy(ds), mode).problems]  # type: ignore[arg-type]
    assert first
    assert [str(p) for p in validation.check(copy.deepcopy(ds), mode).problems] == first  # type: ignore[arg-type]
