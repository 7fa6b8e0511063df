"""Search query parsing and matching (spec sec. 5, PS3.4 C.2.2.2) and result projection."""

from __future__ import annotations

import calendar
import fnmatch
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factory import code, performed, sq, v, workitem
from upsrs import datetimes
from upsrs.errors import QueryError
from upsrs.matching import parse_query, project


def q(query: str | list[tuple[str, str]], tz: timezone = UTC):  # type: ignore[no-untyped-def]
    pairs = query if isinstance(query, list) else [tuple(p.split("=", 1)) for p in query.split("&")]  # type: ignore[misc]
    return parse_query(pairs, tz)


def matches(query: str | list[tuple[str, str]], ds: dict[str, Any], tz: timezone = UTC) -> bool:
    return q(query, tz).matches(ds)


@pytest.fixture
def wi() -> dict[str, Any]:
    ds = workitem(patient_id="PAT-1", label="Lung nodule CAD", worklist="AI", priority="HIGH",
                  start="20240315101010", patient_name="DOE^JANE", accession="ACC-1")
    ds["00080018"] = v("UI", "1.2.3.4")
    return ds


# ---------------------------------------------------------------- single value
def test_single_value(wi: dict[str, Any]) -> None:
    assert matches("ProcedureStepState=SCHEDULED", wi)
    assert not matches("ProcedureStepState=COMPLETED", wi)
    assert matches("ScheduledProcedureStepPriority=HIGH&WorklistLabel=AI&PatientID=PAT-1", wi)
    assert not matches("ScheduledProcedureStepPriority=HIGH&WorklistLabel=AI&PatientID=PAT-2", wi)
    assert not matches("PatientID=pat-1", wi)  # case-sensitive
    assert not matches("PatientID=PAT", wi)  # no prefix matching without a wildcard
    assert matches("PatientName=DOE^JANE", wi)


def test_trailing_spaces_are_padding(wi: dict[str, Any]) -> None:
    """PS3.5 6.2: trailing spaces of LO/SH/CS values are not significant, on either side."""
    assert matches([("PatientID", "PAT-1 ")], wi)
    assert matches([("ReferencedRequestSequence.RequestedProcedureID", "RP-ACC-1  ")], wi)
    wi["00741204"] = v("LO", "Lung nodule CAD ")
    assert matches([("ProcedureStepLabel", "Lung nodule CAD")], wi)


def test_single_value_with_a_space(wi: dict[str, Any]) -> None:
    wi["00741000"] = v("CS", "IN PROGRESS")
    assert matches("ProcedureStepState=IN PROGRESS", wi)
    assert not matches("ProcedureStepState=IN", wi)


def test_single_value_on_a_multi_valued_attribute(wi: dict[str, Any]) -> None:
    wi["00100020"] = v("LO", "A", "B")
    assert matches("PatientID=B", wi) and matches("PatientID=A", wi) and not matches("PatientID=C", wi)


def test_absent_or_empty_attribute_matches_no_single_value(wi: dict[str, Any]) -> None:
    wi["00100020"] = v("LO")
    assert not matches("PatientID=PAT-1", wi)
    del wi["00100020"]
    assert not matches("PatientID=PAT-1", wi)


def test_numeric_single_value(wi: dict[str, Any]) -> None:
    wi["001021C0"] = v("US", 4)
    assert matches("PregnancyStatus=4", wi) and not matches("PregnancyStatus=3", wi)
    with pytest.raises(QueryError):
        q("PregnancyStatus=four")


# ---------------------------------------------------------------- list of UIDs
def test_uid_list(wi: dict[str, Any]) -> None:
    assert matches("SOPInstanceUID=1.2.3.4", wi)
    assert matches("SOPInstanceUID=9.9,1.2.3.4", wi)
    assert matches("SOPInstanceUID=1.2.3.4,9.9", wi)
    assert not matches("SOPInstanceUID=9.9,8.8", wi)
    assert not matches("SOPInstanceUID=1.2.3", wi)


@pytest.mark.parametrize("bad", ["1.2,", "1.2,abc", "1.02", "1.2.*", "1.2.3?"])
def test_invalid_uid_query_is_a_query_error(bad: str) -> None:
    with pytest.raises(QueryError):
        q(f"SOPInstanceUID={bad}")


# ---------------------------------------------------------------- wildcards
def test_wildcards(wi: dict[str, Any]) -> None:
    assert matches("ProcedureStepLabel=Lung*", wi)
    assert matches("ProcedureStepLabel=*CAD", wi)
    assert matches("ProcedureStepLabel=*nodule*", wi)
    assert matches("ProcedureStepLabel=Lung?nodule CA?", wi)
    assert not matches("ProcedureStepLabel=lung*", wi)
    assert not matches("ProcedureStepLabel=Lung?", wi)  # ? is exactly one character
    assert matches("PatientName=DOE^*", wi) and not matches("PatientName=ROE^*", wi)
    assert matches("ProcedureStepState=SCHED*", wi)
    assert matches("ReferencedRequestSequence.AccessionNumber=ACC-?", wi)


def test_wildcard_characters_of_regular_expressions_are_literal(wi: dict[str, Any]) -> None:
    wi["00741204"] = v("LO", "a.b+(c)$")
    assert matches("ProcedureStepLabel=a.b+(c)$", wi)
    assert matches("ProcedureStepLabel=a.*", wi)
    assert not matches("ProcedureStepLabel=axb+(c)$", wi)


def test_star_alone_is_universal(wi: dict[str, Any]) -> None:
    del wi["00100020"]
    assert matches("PatientID=*", wi)  # universal: matches even without the attribute
    assert matches("PatientID=", wi)


# ---------------------------------------------------------------- date / time ranges
@pytest.mark.parametrize("value,hit", [
    ("20240315101010", True), ("20240315101011", False),
    ("2024", True), ("202403", True), ("20240315", True), ("2024031510", True), ("202403151010", True),
    ("2023", False), ("202404", False), ("20240316", False),
    ("20240301-20240331", True), ("20240301000000-20240315101009", False),
    ("20240315101010-20240315101010", True),  # inclusive at both ends
    ("-20240315", True), ("-20240314", False), ("20240315-", True), ("20240316-", False),
    ("2024-2025", True), ("2022-2023", False),
])
def test_dt_single_values_and_ranges(wi: dict[str, Any], value: str, hit: bool) -> None:
    assert matches(f"ScheduledProcedureStepStartDateTime={value}", wi) == hit


def test_dt_ranges_compare_instants_across_utc_offsets(wi: dict[str, Any]) -> None:
    wi["00404005"] = v("DT", "20240101120000+0100")  # 11:00 UTC
    key = "ScheduledProcedureStepStartDateTime"
    assert matches(f"{key}=20240101110000+0000", wi)
    assert matches(f"{key}=20240101060000-0500", wi)
    assert not matches(f"{key}=20240101120000+0000", wi)
    assert matches(f"{key}=20240101105959+0000-20240101110000+0000", wi)
    assert not matches(f"{key}=20240101110001+0000-20240101120000+0000", wi)
    assert matches(f"{key}=20240101060000-0500-20240101070000-0500", wi)  # '-' of an offset inside a range
    assert matches(f"{key}=-20240101060000-0500", wi)


def test_dt_without_offset_is_in_the_server_offset(wi: dict[str, Any]) -> None:
    wi["00404005"] = v("DT", "20240101120000")
    plus1 = timezone(timedelta(hours=1))
    assert matches("ScheduledProcedureStepStartDateTime=20240101110000+0000", wi, plus1)
    assert not matches("ScheduledProcedureStepStartDateTime=20240101110000+0000", wi)
    assert matches("ScheduledProcedureStepStartDateTime=20240101120000+0000", wi)


def test_stored_reduced_precision_value(wi: dict[str, Any]) -> None:
    wi["00404005"] = v("DT", "202403")
    assert matches("ScheduledProcedureStepStartDateTime=2024", wi)
    assert matches("ScheduledProcedureStepStartDateTime=20240301", wi)  # its instant is the start of the month
    assert not matches("ScheduledProcedureStepStartDateTime=20240302-", wi)


def test_da_and_tm_ranges(wi: dict[str, Any]) -> None:
    assert matches("PatientBirthDate=19700101", wi)
    assert matches("PatientBirthDate=19690101-19701231", wi)
    assert matches("PatientBirthDate=-19700101", wi) and matches("PatientBirthDate=19700101-", wi)
    assert not matches("PatientBirthDate=19700102-", wi) and not matches("PatientBirthDate=-19691231", wi)
    wi["0040A370"]["Value"][0]["00402005"] = v("TM", "101500")
    key = "ReferencedRequestSequence.IssueTimeOfImagingServiceRequest"
    assert matches(f"{key}=10", wi) and matches(f"{key}=1015", wi) and matches(f"{key}=0900-1100", wi)
    assert matches(f"{key}=-101500", wi) and matches(f"{key}=1015-", wi)
    assert not matches(f"{key}=1016-", wi) and not matches(f"{key}=11", wi)


@pytest.mark.parametrize("bad", ["-", "2024-13", "20241301", "2024-01-01", "yesterday", "20240101--20240102",
                                 "202401011230.5"])
def test_malformed_dates_are_query_errors(bad: str) -> None:
    with pytest.raises(QueryError):
        q(f"ScheduledProcedureStepStartDateTime={bad}")


def test_year_9999_values_are_matchable() -> None:
    ds = {"00404005": v("DT", "99991231235959")}
    assert matches("ScheduledProcedureStepStartDateTime=99991231-", ds)
    assert matches("ScheduledProcedureStepStartDateTime=9999", ds)
    assert not matches("ScheduledProcedureStepStartDateTime=-99991230", ds)


# ---------------------------------------------------------------- sequences
def test_sequence_matching(wi: dict[str, Any]) -> None:
    assert matches("ScheduledWorkitemCodeSequence.CodeValue=AIW-MSL", wi)
    assert not matches("ScheduledWorkitemCodeSequence.CodeValue=OTHER", wi)
    assert matches("ScheduledStationNameCodeSequence.CodeValue=AIW-NODE-1", wi)
    assert matches("ReferencedRequestSequence.AccessionNumber=ACC-1", wi)
    wi["00404025"] = sq()
    assert not matches("ScheduledStationNameCodeSequence.CodeValue=AIW-NODE-1", wi)


def test_keys_of_one_sequence_must_hold_in_the_same_item() -> None:
    ds = {"00404018": sq(code("A", "S1", "a"), code("B", "S2", "b"))}
    key = "ScheduledWorkitemCodeSequence"
    assert matches(f"{key}.CodeValue=A&{key}.CodingSchemeDesignator=S1", ds)
    assert matches(f"{key}.CodeValue=B&{key}.CodingSchemeDesignator=S2", ds)
    assert not matches(f"{key}.CodeValue=A&{key}.CodingSchemeDesignator=S2", ds)  # different items
    # the same, with hex tags and with the two forms mixed
    assert not matches("00404018.00080100=A&00404018.00080102=S2", ds)
    assert not matches(f"00404018.00080100=A&{key}.CodingSchemeDesignator=S2", ds)
    assert matches(f"00404018.CodeValue=A&{key}.00080102=S1", ds)


def test_nested_sequences() -> None:
    ds = {"00404034": sq({"00404009": sq(code("RAD1", "99", "radiologist")), "00404036": v("LO", "HOSP")},
                         {"00404009": sq(code("RAD2", "99", "other")), "00404036": v("LO", "ELSEWHERE")})}
    key = "ScheduledHumanPerformersSequence"
    assert matches(f"{key}.HumanPerformerCodeSequence.CodeValue=RAD1", ds)
    assert matches(f"{key}.HumanPerformerCodeSequence.CodeValue=RAD2&{key}.HumanPerformerOrganization=ELSEWHERE", ds)
    assert not matches(f"{key}.HumanPerformerCodeSequence.CodeValue=RAD1&{key}.HumanPerformerOrganization=ELSEWHERE", ds)
    assert not matches(f"{key}.HumanPerformerCodeSequence.CodeValue=RAD3", ds)
    assert matches("00404034.00404009.00080100=RAD2", ds)


def test_sequence_match_key_without_item_keys_is_universal(wi: dict[str, Any]) -> None:
    wi["00404025"] = sq()
    assert matches("ScheduledStationNameCodeSequence=", wi)
    with pytest.raises(QueryError):
        q("ScheduledStationNameCodeSequence=X")  # a sequence has no value of its own


# ---------------------------------------------------------------- universal, forms, errors
def test_universal_matching_filters_nothing(wi: dict[str, Any]) -> None:
    other = {"00741000": v("CS", "COMPLETED")}
    for query in ("PatientID=", "ScheduledProcedureStepStartDateTime=", "ProcedureStepLabel=*", "SOPInstanceUID="):
        assert matches(query, wi) and matches(query, other)


def test_empty_query_matches_everything(wi: dict[str, Any]) -> None:
    query = parse_query([])
    assert query.matchers == [] and query.matches(wi) and query.matches({})


def test_keyword_and_tag_forms_are_the_same_key(wi: dict[str, Any]) -> None:
    for a, b in [("PatientID=PAT-1", "00100020=PAT-1"), ("ScheduledWorkitemCodeSequence.CodeValue=AIW-MSL",
                                                         "00404018.00080100=AIW-MSL")]:
        assert matches(a, wi) and matches(b, wi)
        qa, qb = q(a), q(b)
        assert [(m.tag, m.kind) for m in qa.matchers] == [(m.tag, m.kind) for m in qb.matchers]


@pytest.mark.parametrize("query", [
    "PatientID=A&PatientID=B", "PatientID=A&00100020=A",
    "ScheduledWorkitemCodeSequence.CodeValue=A&00404018.00080100=B",
])
def test_duplicate_key_is_a_query_error(query: str) -> None:
    with pytest.raises(QueryError):
        q(query)


@pytest.mark.parametrize("query", ["Foo=1", "patientid=X", "00091010=X", "PatientID.CodeValue=X",
                                   "ScheduledWorkitemCodeSequence.Foo=X", ".PatientID=X", "PatientID.=X",
                                   "includefield=NoSuchThing"])
def test_unknown_attribute_is_a_query_error(query: str) -> None:
    with pytest.raises(QueryError):
        q(query)


@pytest.mark.parametrize("query", ["TransactionUID=1.2.3", "00081195=1.2.3", "TransactionUID="])
def test_transaction_uid_is_not_matchable(query: str) -> None:
    with pytest.raises(QueryError):
        q(query)


def test_transaction_uid_is_never_returned(wi: dict[str, Any]) -> None:
    wi["00081195"] = v("UI", "2.25.77")
    for query in ("includefield=TransactionUID", "includefield=all", "includefield=00081195", "PatientID=PAT-1"):
        assert "00081195" not in project(wi, q(query))


@pytest.mark.parametrize("param,value", [("limit", "x"), ("limit", "-1"), ("offset", "1.5"), ("offset", "١"),
                                         ("fuzzymatching", "maybe"), ("emptyvaluematching", "2")])
def test_malformed_reserved_parameters(param: str, value: str) -> None:
    with pytest.raises(QueryError):
        q([(param, value)])


def test_reserved_parameters() -> None:
    query = q("limit=5&offset=10&fuzzymatching=true&accept=application/dicom%2Bjson&charset=utf-8&PatientID=X")
    assert (query.limit, query.offset, query.unsupported) == (5, 10, ["fuzzy"])
    assert [m.name for m in query.matchers] == ["PatientID"]
    assert q("limit=" + "9" * 30).limit == 2**31 - 1  # no larger than any result count can be


def test_empty_value_and_multiple_value_matching(wi: dict[str, Any]) -> None:
    wi["00100020"] = v("LO")
    assert matches([("PatientID", '""'), ("emptyvaluematching", "true")], wi)
    assert not matches([("PatientID", '""'), ("emptyvaluematching", "false")], wi)
    wi["00100020"] = v("LO", "A", "B")
    assert matches([("PatientID", "A,B"), ("multiplevaluematching", "true")], wi)
    assert not matches([("PatientID", "A,C"), ("multiplevaluematching", "true")], wi)


# ---------------------------------------------------------------- projection (spec sec. 5.3)
DEFAULT_RETURN = {  # Return Key 1 and 2 of Table CC.2.5-3, top level
    "00080016", "00080018", "00741200", "00741204", "00741202", "00741210", "00404025", "00404026", "00404027",
    "00404034", "00404005", "00404018", "00404041", "00404021", "0020000D", "00100010", "00100020", "00100021",
    "00100024", "00101002", "00100030", "00100040", "00380010", "00380014", "00081080", "00081084", "0040A370",
    "00741000", "00741002",
}


def test_projection_returns_return_keys_1_and_2_even_when_empty(wi: dict[str, Any]) -> None:
    wi["00081195"] = v("UI", "2.25.1")
    wi["00404010"] = v("DT", "20240101")
    del wi["00380010"]  # absent type 2: returned empty
    out = project(wi, q("PatientID=PAT-1"))
    assert set(out) == DEFAULT_RETURN
    assert out["00380010"] == {"vr": "LO"}
    for k in DEFAULT_RETURN - {"00380010"}:
        assert out[k] == wi[k]


def test_projection_leaves_return_key_3_out_unless_asked(wi: dict[str, Any]) -> None:
    wi["00404011"] = v("DT", "20240315120000")
    wi["00404070"] = sq({"00404072": sq({"00404073": v("UR", "https://x")})})
    out = project(wi, q([]))
    assert "00404011" not in out and "00404070" not in out and "00400400" not in out
    out = project(wi, q("includefield=ExpectedCompletionDateTime,00404070&includefield=CommentsOnTheScheduledProcedureStep"))
    assert out["00404011"] == wi["00404011"] and out["00404070"] == wi["00404070"] and out["00400400"] == wi["00400400"]
    # a match key is returned too
    assert project(wi, q("ExpectedCompletionDateTime=2024"))["00404011"] == wi["00404011"]
    # asked for but absent: returned empty
    assert project(wi, q("includefield=ScheduledProcedureStepExpirationDateTime"))["00404008"] == {"vr": "DT"}


def test_projection_2c_and_specific_character_set_when_present(wi: dict[str, Any]) -> None:
    assert "00102000" not in project(wi, q([]))
    wi["00102000"] = v("LO", "allergy")
    wi["00080005"] = v("CS", "ISO_IR 192")
    out = project(wi, q([]))
    assert out["00102000"] == wi["00102000"] and out["00080005"] == wi["00080005"]


def test_projection_returns_1c_keys_of_the_performed_procedure_when_set(wi: dict[str, Any]) -> None:
    """Spec sec. 5.3 item 2: Performed Procedure Step End DateTime and Actual Human
    Performers Sequence are returned if set, though their sequence is no return key."""
    assert "00741216" not in project(wi, q([]))
    wi.update(performed("20240315120000"))
    item = wi["00741216"]["Value"][0]
    item["00404035"] = sq({"00404009": sq(code("RAD1", "99", "r")), "00404037": v("PN", {"Alphabetic": "X^Y"})})
    out = project(wi, q([]))
    assert out["00741216"] == {"vr": "SQ", "Value": [{"00404051": item["00404051"], "00404035": item["00404035"]}]}
    # includefield returns the whole sequence
    assert project(wi, q("includefield=00741216"))["00741216"] == wi["00741216"]


def test_includefield_all_returns_everything_but_the_lock(wi: dict[str, Any]) -> None:
    wi["00081195"] = v("UI", "2.25.1")
    wi["00091010"] = v("LO", "private-ish")
    out = project(wi, q("includefield=all"))
    assert out == {k: el for k, el in wi.items() if k != "00081195"}


# ---------------------------------------------------------------- properties
ALPHABET = "ab.+($^"


@settings(max_examples=400, deadline=None)
@given(pattern=st.text(ALPHABET + "*?", min_size=1, max_size=8), value=st.text(ALPHABET, min_size=1, max_size=8))
def test_wildcard_agrees_with_fnmatch(pattern: str, value: str) -> None:
    ds = {"00741204": v("LO", value)}
    assert matches([("ProcedureStepLabel", pattern)], ds) == fnmatch.fnmatchcase(value, pattern)


OFFSET_MINUTES = st.sampled_from([0, 60, -300, 330, 840, -720, 45])


def _fmt_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


@st.composite
def dt_texts(draw: st.DrawFn) -> tuple[str, datetime, datetime]:
    """A DT value of random precision with its [start, end) as aware datetimes (computed here,
    independently of upsrs.datetimes)."""
    t = draw(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2040, 12, 31)))
    minutes = draw(OFFSET_MINUTES)
    tz = timezone(timedelta(minutes=minutes))
    precision = draw(st.sampled_from(["Y", "m", "d", "H", "M", "S"]))
    t = t.replace(microsecond=0, tzinfo=tz)
    if precision == "Y":
        start = t.replace(month=1, day=1, hour=0, minute=0, second=0)
        end = start.replace(year=start.year + 1)
        text = f"{t:%Y}"
    elif precision == "m":
        start = t.replace(day=1, hour=0, minute=0, second=0)
        end = start + timedelta(days=calendar.monthrange(t.year, t.month)[1])
        text = f"{t:%Y%m}"
    else:
        fmt, unit, cut = {"d": ("%Y%m%d", timedelta(days=1), {"hour": 0, "minute": 0, "second": 0}),
                          "H": ("%Y%m%d%H", timedelta(hours=1), {"minute": 0, "second": 0}),
                          "M": ("%Y%m%d%H%M", timedelta(minutes=1), {"second": 0}),
                          "S": ("%Y%m%d%H%M%S", timedelta(seconds=1), {})}[precision]
        start = t.replace(**cut)
        end = start + unit
        text = t.strftime(fmt)
    return text + _fmt_offset(minutes), start, end


@settings(max_examples=300, deadline=None)
@given(low=st.none() | dt_texts(), high=st.none() | dt_texts(), stored=dt_texts())
def test_dt_range_matches_exactly_the_instants_inside(low, high, stored) -> None:  # type: ignore[no-untyped-def]
    if low is None and high is None:
        return
    query = f"{low[0] if low else ''}-{high[0] if high else ''}"
    text, instant, _ = stored  # a stored value's instant is the start of its interval
    inside = (low is None or instant >= low[1]) and (high is None or instant < high[2])
    ds = {"00404005": v("DT", text)}
    assert matches([("ScheduledProcedureStepStartDateTime", query)], ds) == inside


@settings(max_examples=200, deadline=None)
@given(a=st.dates(date(1900, 1, 1), date(2100, 12, 31)), b=st.dates(date(1900, 1, 1), date(2100, 12, 31)),
       x=st.dates(date(1900, 1, 1), date(2100, 12, 31)), form=st.sampled_from(["closed", "open-low", "open-high"]))
def test_da_range_matches_exactly_the_dates_inside(a: date, b: date, x: date, form: str) -> None:
    query = {"closed": f"{a:%Y%m%d}-{b:%Y%m%d}", "open-low": f"-{b:%Y%m%d}", "open-high": f"{a:%Y%m%d}-"}[form]
    inside = (form == "open-low" or a <= x) and (form == "open-high" or x <= b)
    assert matches([("PatientBirthDate", query)], {"00100030": v("DA", f"{x:%Y%m%d}")}) == inside
    assert matches([("PatientBirthDate", f"{x:%Y%m%d}")], {"00100030": v("DA", f"{x:%Y%m%d}")})


@pytest.mark.parametrize("tz", [timezone.utc, timezone(timedelta(hours=14)), timezone(timedelta(hours=-5, minutes=-30))])
def test_dt_now_is_the_current_instant_as_dt_text(tz: timezone, monkeypatch: pytest.MonkeyPatch) -> None:
    """``dt_now`` formats the second once and appends the microseconds: its text is what
    strftime gives for the same instant, also across second and day boundaries."""
    for ns in (1_795_000_000_123_456_789, 1_795_000_000_999_999_999, 1_795_000_001_000_000_000,
               1_795_046_399_999_999_000, 1_795_046_400_000_001_000):
        monkeypatch.setattr(datetimes.time, "time_ns", lambda ns=ns: ns)
        second, micro = divmod(ns // 1000, 1_000_000)
        expected = datetime.fromtimestamp(second, tz).replace(microsecond=micro).strftime("%Y%m%d%H%M%S.%f%z")
        assert datetimes.dt_now(tz) == expected
    monkeypatch.undo()
    start, start_dt = datetimes.dt_interval(datetimes.dt_now(tz)), datetime.now(timezone.utc)
    assert abs(start[0] - start_dt.timestamp()) < 1.0
