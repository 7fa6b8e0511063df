"""``upsrs.schema``: the table compiled into a JSON Schema may only ever say "yes" where the
validation engine says "no problem, nothing to add" — and it must say it for the
workitems and updates AIW-I actors actually send, or it saves nothing."""

from __future__ import annotations

import copy
import functools
import random
import string
from datetime import date, timedelta
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.workload import make_workitem
from tests.factory import code, performed, progress, sq, v, workitem
from tests.test_validation import valid_workitems
from upsrs import dicomjson as dj
from upsrs import schema, validation, vr
from upsrs.tables import AttributeRule, enumerations, ups_attributes

MODES = ("create", "set")


def engine(ds: Any, mode: str) -> validation.Outcome:
    return validation._check(copy.deepcopy(ds), mode)  # type: ignore[arg-type]


def assert_yes_is_engines_yes(ds: Any, mode: str) -> bool:
    """The property itself; returns the schema's answer."""
    if not schema.accepts(ds, mode):  # type: ignore[arg-type]
        return False
    out = engine(ds, mode)
    assert not out.problems and not out.added, (mode, [str(p) for p in out.problems], out.added)
    return True


# ---------------------------------------------------------------- values, VR by VR
@functools.cache
def _values_validator(vr_name: str) -> Any:
    items = schema.VALUES.get(vr_name, schema._ONLY_EMPTY)
    return jsonschema_rs.Draft202012Validator({"type": "array", "items": items},
                                              pattern_options=jsonschema_rs.RegexOptions())


def _value_ok_by_schema(vr_name: str, value: Any) -> bool:
    return bool(_values_validator(vr_name).is_valid([value]))


_ALPHABET = string.ascii_letters + string.digits + " ._-+^\\\t\n\r\x0c\x00\x1b\x7f\x85é漢:/&" + "0123456789" * 4
DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=21)
DATE_LIKE = st.builds(lambda d, rest: d.strftime("%Y%m%d") + rest,
                      st.dates(min_value=date(1, 1, 1)), st.sampled_from(["", "1200", "235959", "235959.123456",
                                                                            "+1400", "-1500", "0000.5", "2400"]))
ANY_VALUE = (st.text(alphabet=_ALPHABET, max_size=80) | DIGITS | DATE_LIKE | st.none() | st.booleans()
             | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
             | st.dictionaries(st.sampled_from(["Alphabetic", "Ideographic", "Phonetic", "alphabetic", "Other"]),
                               st.text(alphabet=_ALPHABET, max_size=70) | st.integers(), max_size=3))


@pytest.mark.parametrize("vr_name", sorted(vr.ALL_VRS - {"SQ"}))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=ANY_VALUE)
def test_each_vr_schema_accepts_only_values_the_engine_accepts(vr_name: str, value: Any) -> None:
    if _value_ok_by_schema(vr_name, value):
        event("accepted")
        assert vr.check_value(vr_name, value) is None, (vr_name, value)


@pytest.mark.parametrize("vr_name", ["DA", "DT"])
def test_every_day_of_four_centuries_of_calendar(vr_name: str) -> None:
    """Every day from 1899 to 2301 and every impossible 29th-31st: the schema takes the
    real days (but the 29th of February, left to the engine) and no impossible one."""
    day, accepted = date(1899, 1, 1), 0
    while day < date(2301, 1, 1):
        text = day.strftime("%Y%m%d") + ("1030" if vr_name == "DT" else "")
        if _value_ok_by_schema(vr_name, text):
            assert vr.check_value(vr_name, text) is None, text
            accepted += 1
        else:
            assert day.year < 1000 or day.year > 2999 or (day.month, day.day) == (2, 29), text
        day += timedelta(days=1)
    assert accepted > 140_000
    for year in (1900, 2000, 2023, 2024):
        for month in range(1, 13):
            for d in (29, 30, 31, 32):
                text = f"{year}{month:02d}{d}"
                if _value_ok_by_schema(vr_name, text):
                    assert vr.check_value(vr_name, text) is None, text


@pytest.mark.parametrize("vr_name,value", [
    ("DT", "20261122103000"), ("DT", "20261122103000.123456+0100"), ("DT", "2026"), ("DT", "202611"),
    ("DA", "20260131"), ("DA", "20261130"), ("TM", "103000.5"), ("UI", "2.25.1234567890"), ("CS", "IN PROGRESS"),
    ("PN", {"Alphabetic": "DOE^JANE", "Ideographic": "山田^太郎"}), ("LO", "Müller"), ("DS", 1.5), ("DS", " -1.5e3 "),
    ("IS", 12), ("IS", "-12"), ("UR", "https://pacs.example/dicom-web"), ("LT", "line 1\r\nline 2\\"), ("AE", "AIW NODE"),
])
def test_common_values_are_modelled(vr_name: str, value: Any) -> None:
    """What AIW-I actors send takes the fast path (else the schema saves nothing)."""
    assert _value_ok_by_schema(vr_name, value)
    assert vr.check_value(vr_name, value) is None


@pytest.mark.parametrize("vr_name,value", [
    ("DA", "20240229"), ("DT", "99991231"), ("UI", "1.02"), ("CS", "lower"), ("LO", "a\\b"), ("LO", "x" * 65),
    ("US", 1), ("US", 1.0), ("IS", 2**31), ("IS", True), ("DS", "1e5\n"), ("AE", "   "), ("PN", "DOE^J"),
    ("PN", {"Alphabetic": "A^B^C^D^E^F"}), ("UR", "http://a b"), ("TM", "240000"),
])
def test_what_is_not_modelled_goes_to_the_engine(vr_name: str, value: Any) -> None:
    assert not _value_ok_by_schema(vr_name, value)


# ---------------------------------------------------------------- what actors send
def test_workitems_and_updates_actors_send_take_the_fast_path() -> None:
    rng = random.Random(7)
    creates = [make_workitem(rng, n) for n in range(60)] + [workitem(), workitem(station=None, series_uids=("1.2.3",))]
    for ds in creates:
        assert assert_yes_is_engines_yes(orjson.loads(orjson.dumps(ds)), "create")
    for ds in [progress(p, "stage") for p in (0, 50, 100)] + [performed(), {}]:
        assert assert_yes_is_engines_yes(ds, "set")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_workitems())
def test_generated_valid_workitems(case: tuple[dict[str, Any], set[str]]) -> None:
    ds, deleted = case
    accepted = assert_yes_is_engines_yes(ds, "create")
    event(f"accepted={accepted}")
    if deleted:  # a type 2 attribute missing: the SCP adds it, which the schema never does
        assert not accepted


# ---------------------------------------------------------------- every rule, every form
SAMPLES: dict[str, list[Any]] = {
    "AE": ["AIW1"], "AS": ["045Y"], "CS": ["ZZ"], "DA": ["20260115"], "DS": ["1.5"], "DT": ["20260115103000"],
    "IS": ["3"], "LO": ["x"], "LT": ["t"], "PN": [{"Alphabetic": "DOE^J"}], "SH": ["X"], "ST": ["t"], "TM": ["103000"],
    "UC": ["u"], "UI": ["1.2.3"], "UR": ["https://x.example"], "UT": ["t"], "US": [1],
}


def _when_values(rules: dict[int, AttributeRule], out: dict[str, set[str]]) -> dict[str, set[str]]:
    """The values "when=T:V" conditions of the table test T for (a form each)."""
    for mode in MODES:
        for s in validation._steps(rules, mode):  # type: ignore[arg-type]
            if s.cond is not None and s.cond.kind == "when":
                out.setdefault(s.cond.key, set()).add(s.cond.value)
    for rule in rules.values():
        _when_values(rule.children, out)
    return out


WHEN_VALUES = _when_values(ups_attributes(), {})


def _forms(rule: AttributeRule) -> list[dict[str, Any]]:
    """The forms of one attribute: empty, empty array, blank value, a value (each
    enumerated value, and each a condition tests for), an empty item and a full item."""
    vr_name = rule.vrs[0]
    forms: list[dict[str, Any]] = [{"vr": vr_name}, {"vr": vr_name, "Value": []}, {"vr": vr_name, "Value": [""]},
                                   {"vr": vr_name, "Value": [None]}]
    if vr_name == "SQ":
        full = {dj.key(t): _forms(c)[-1] for t, c in rule.children.items()}
        forms += [sq({}), sq(full), sq(full, {})]
    else:
        values = sorted(enumerations().get(rule.tag, set()) | WHEN_VALUES.get(rule.key, set())) or SAMPLES[vr_name]
        forms += [v(vr_name, x) for x in values] + [v(vr_name, values[0], "")]
    return forms


def _levels(ds: dict[str, Any], rules: dict[int, AttributeRule]) -> list[tuple[dict[str, Any], dict[int, AttributeRule]]]:
    """Every dataset of ``ds`` with the table level it answers to."""
    out = [(ds, rules)]
    for tag, rule in rules.items():
        el = ds.get(dj.key(tag))
        if rule.children and isinstance(el, dict):
            for item in el.get("Value") or []:
                out += _levels(item, rule.children)
    return out


def _full_workitem() -> dict[str, Any]:
    ds = workitem(series_uids=("1.2.3.4", "1.2.3.5"))
    ds["00404070"] = sq({"00404072": sq({"00404073": v("UR", "https://pacs.example/dicom-web")})})
    ds["00741210"] = sq({"0040A040": v("CS", "TEXT"), "0040A043": sq(code("T", "99AIW", "t")), "0040A160": v("UT", "x")})
    ds["00404034"] = sq({"00404009": sq(code("H", "99AIW", "h")), "00404037": v("PN", {"Alphabetic": "A^B"}),
                         "00404036": v("LO", "Radiology")})
    return ds


def _sweep(mode: str) -> Iterator[dict[str, Any]]:
    """Each attribute of each level of a full workitem (and of an N-SET), removed, or
    replaced by or added in each of its forms."""
    bases = [_full_workitem()] if mode == "create" else [_full_workitem(), progress(50, "x"), performed()]
    for base in bases:
        for n, (level, rules) in enumerate(_levels(base, ups_attributes())):
            for tag, rule in rules.items():
                key = dj.key(tag)
                for form in [None, *_forms(rule)]:
                    ds = copy.deepcopy(base)
                    target = _levels(ds, ups_attributes())[n][0]
                    if form is None:
                        target.pop(key, None)
                    else:
                        target[key] = copy.deepcopy(form)
                    yield ds


@pytest.mark.parametrize("mode", MODES)
def test_every_rule_in_every_form_at_its_level(mode: str) -> None:
    """Wherever the schema says yes, so does the engine."""
    seen = {True: 0, False: 0}
    for ds in _sweep(mode):
        seen[assert_yes_is_engines_yes(ds, mode)] += 1
    assert seen[True] > 200 and seen[False] > 200, seen  # both answers were exercised


@pytest.mark.parametrize("mode", MODES)
def test_shared_subschemas_answer_as_the_inline_schema(mode: str) -> None:
    """``_shared`` (repeated subschemas kept once, for memory) changes no answer."""
    inline = jsonschema_rs.Draft202012Validator(
        {"$defs": schema.VALUES, **schema._dataset(ups_attributes(), mode, [])},  # type: ignore[arg-type]
        pattern_options=jsonschema_rs.RegexOptions())
    assert sum(name.startswith("shared") for name in schema.schema(mode)["$defs"]) > 10
    for ds in _sweep(mode):
        assert schema.accepts(ds, mode) == inline.is_valid(ds)  # type: ignore[arg-type]


# ---------------------------------------------------------------- random corruption
def _datasets(ds: Any) -> list[dict[str, Any]]:
    out = [ds] if isinstance(ds, dict) else []
    for el in ds.values() if isinstance(ds, dict) else []:
        if isinstance(el, dict) and isinstance(el.get("Value"), list):
            for item in el["Value"]:
                if isinstance(item, dict) and el.get("vr") == "SQ":
                    out += _datasets(item)
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), mode=st.sampled_from(MODES))
def test_random_edits_never_get_a_yes_the_engine_withholds(data: st.DataObject, mode: str) -> None:
    ds = _full_workitem() if mode == "create" else data.draw(st.sampled_from([_full_workitem(), performed(), progress(5)]))
    all_keys = sorted({dj.key(t) for t in ups_attributes()} | {"00091001", "00100020", "00080100", "0040A040",
                                                               "00000000", "abcdefgh"})
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        target = data.draw(st.sampled_from(_datasets(ds)), label="dataset")
        op = data.draw(st.sampled_from(["drop", "value", "vr", "add", "item", "members"]), label="op")
        keys = sorted(target)
        if op == "drop" and keys:
            target.pop(data.draw(st.sampled_from(keys)))
        elif op == "value" and keys:
            el = target[data.draw(st.sampled_from(keys))]
            if isinstance(el, dict):
                el["Value"] = data.draw(st.lists(ANY_VALUE, max_size=3) | st.just([]) | st.none() | ANY_VALUE)
        elif op == "vr" and keys:
            el = target[data.draw(st.sampled_from(keys))]
            if isinstance(el, dict):
                el["vr"] = data.draw(st.sampled_from(sorted(vr.ALL_VRS) + ["XX", ""]))
        elif op == "add":
            k = data.draw(st.sampled_from(all_keys))
            vr_name = (dj.dictionary_vrs(int(k, 16)) or ("UN",))[0] if all(c in string.hexdigits for c in k) else "LO"
            target[k] = data.draw(st.sampled_from([{"vr": vr_name}, sq({}), v(vr_name, *SAMPLES.get(vr_name, ["x"])),
                                                   {"vr": vr_name, "Value": [""]}, {"vr": vr_name, "InlineBinary": "AA=="}]))
        elif op == "item" and keys:
            el = target[data.draw(st.sampled_from(keys))]
            if isinstance(el, dict) and el.get("vr") == "SQ" and isinstance(el.get("Value", []), list):
                el.setdefault("Value", []).append(data.draw(st.sampled_from([{}, None, "x", copy.deepcopy(target)])))
        elif op == "members" and keys:
            el = target[data.draw(st.sampled_from(keys))]
            if isinstance(el, dict):
                el[data.draw(st.sampled_from(["BulkDataURI", "InlineBinary", "value", "Value"]))] = "x"
    event(f"{mode} accepted={assert_yes_is_engines_yes(ds, mode)}")


# ---------------------------------------------------------------- input it cannot take in
@pytest.mark.parametrize("value", [10**40, -(10**40), [[[[[[["deep"]]]]]]], {"a": [{"b": [1]}]}])
def test_odd_values_get_a_no_and_no_crash(value: Any) -> None:
    ds = workitem()
    ds["00100020"] = {"vr": "LO", "Value": [value]}
    assert not schema.accepts(ds, "create")


def test_nesting_deeper_than_the_json_parser_allows_gets_a_no() -> None:
    """orjson.loads stops at 1,024 levels; the validator is given more without harm."""
    deep: Any = "x"
    for _ in range(2000):
        deep = [deep]
    ds = workitem()
    ds["00100020"] = {"vr": "LO", "Value": deep}
    assert not schema.accepts(ds, "create")
    items: Any = {}
    for _ in range(300):
        items = {"00404021": sq(items)}
    assert not schema.accepts(items, "create")


# ---------------------------------------------------------------- the cross-check itself
def test_crosscheck_reports_a_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "accepts", lambda ds, mode: True)
    monkeypatch.setattr(validation, "_CROSSCHECK", True)
    ds = workitem()
    del ds["00741200"]  # Scheduled Procedure Step Priority, type 1
    with pytest.raises(AssertionError, match="0074,1200"):
        validation.check(ds, "create")
