"""N-CREATE / N-SET / final-state checks of ``upsrs.validation`` against Table CC.2.5-3
(spec sec. 3) and the VR rules of PS3.5 / PS3.18 F.2 that DICOM JSON values must follow."""

from __future__ import annotations

import copy
import string
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.factory import code, performed, progress, sq, v, workitem
from upsrs import dicomjson as dj
from upsrs import validation, vr
from upsrs.errors import format_tag
from upsrs.tables import AttributeRule, ups_attributes


def check(ds: dict[str, Any], mode: str = "create") -> validation.Outcome:
    return validation.check(copy.deepcopy(ds), mode)  # type: ignore[arg-type]


def problems_at(ds: dict[str, Any], mode: str = "create") -> dict[str, str]:
    """path -> status of every problem found."""
    return {p.path: p.status for p in check(ds, mode).problems}


def stored(state: str = "IN PROGRESS") -> dict[str, Any]:
    """A workitem as the Task Manager keeps it after N-CREATE (and a claim)."""
    ds = workitem()
    ds.pop("00081195")
    ds["00080018"] = v("UI", "2.25.1")
    ds["00404010"] = v("DT", "20261122100000")
    ds["00741000"] = v("CS", state)
    return ds


# ============================================================== N-CREATE
def test_factory_workitem_is_valid_and_complete() -> None:
    out = check(workitem())
    assert out.ok, out.problems
    assert out.added == []  # it already carries every type 2 attribute


def test_missing_type_1_is_0120_naming_the_attribute() -> None:
    for tag in ("00741200", "00741204", "00404005", "00404041", "00741000"):
        ds = workitem()
        del ds[tag]
        found = problems_at(ds)
        assert found.get(format_tag(int(tag, 16))) == "0120", (tag, found)


def test_missing_nested_type_1_is_0120_with_its_item_path() -> None:
    ds = workitem()
    del ds["00404018"]["Value"][0]["00080104"]  # Code Meaning
    del ds["00404021"]["Value"][0]["00081199"]["Value"][1]["00081155"]  # Referenced SOP Instance UID
    found = problems_at(ds)
    assert found == {"(0040,4018)[0](0008,0104)": "0120", "(0040,4021)[0](0008,1199)[1](0008,1155)": "0120"}


@pytest.mark.parametrize("empty", [{"vr": "CS"}, {"vr": "CS", "Value": []}, {"vr": "CS", "Value": [None]},
                                   {"vr": "CS", "Value": [""]}])
def test_empty_type_1_is_0121(empty: dict[str, Any]) -> None:
    ds = workitem()
    ds["00404041"] = empty
    assert problems_at(ds) == {"(0040,4041)": "0121"}


def test_empty_nested_type_1_is_0121() -> None:
    ds = workitem()
    ds["00404021"]["Value"][0]["0040E025"]["Value"][0]["00081190"] = v("UR")
    assert problems_at(ds) == {"(0040,4021)[0](0040,E025)[0](0008,1190)": "0121"}


@pytest.mark.parametrize("tag,el,path", [
    ("00080018", v("UI", "1.2.3"), "(0008,0018)"),  # SOP Instance UID: travels in the URL
    ("00741002", sq(progress(10)["00741002"]["Value"][0]), "(0074,1002)"),  # created empty
    ("00741216", performed()["00741216"], "(0074,1216)"),  # created empty
])
def test_not_allowed_in_n_create_is_0105(tag: str, el: dict[str, Any], path: str) -> None:
    ds = workitem()
    ds[tag] = el
    found = problems_at(ds)
    assert found == {path: "0105"}
    assert "not allowed" in str(check(ds).problems[0]) or "created empty" in str(check(ds).problems[0])


def test_command_group_and_group_length_elements_are_refused() -> None:
    ds = workitem()
    ds["00001000"] = v("UI", "1.2.3")
    ds["00100000"] = v("UL", 4)
    assert problems_at(ds) == {"(0000,1000)": "0105", "(0010,0000)": "0105"}


def test_type_2_attributes_are_added_empty() -> None:
    ds = workitem()
    for tag in ("00100010", "00404025", "00741002", "00741216"):
        del ds[tag]
    del ds["0040A370"]["Value"][0]["00080050"]  # Accession Number, type 2 inside the request item
    out = validation.check(ds, "create")
    assert out.ok, out.problems
    assert set(out.added) == {"(0010,0010)", "(0040,4025)", "(0074,1002)", "(0074,1216)", "(0040,A370)[0](0008,0050)"}
    assert ds["00100010"] == {"vr": "PN"} and ds["00404025"] == {"vr": "SQ"}
    assert ds["0040A370"]["Value"][0]["00080050"] == {"vr": "SH"}


def test_type_2c_and_3_are_not_added() -> None:
    ds = workitem()
    del ds["00404034"]  # Scheduled Human Performers Sequence, 2C
    out = validation.check(ds, "create")
    assert out.ok and "(0040,4034)" not in out.added and "00404034" not in ds
    assert "00404011" in ds and "00404070" not in ds  # 3/1 given stays, 3/3 absent stays absent


# ----------------------------------------------- conditional types: oneof / when / with
def test_code_item_needs_one_of_the_code_values() -> None:
    ds = workitem()
    ds["00404018"] = sq({"00080102": v("SH", "99AIW"), "00080104": v("LO", "no code")})
    assert problems_at(ds) == {"(0040,4018)[0]": "0120"}
    assert "Code Value" in str(check(ds).problems[0]) and "Long Code Value" in str(check(ds).problems[0])


def test_code_item_with_an_empty_code_value_is_not_a_code() -> None:
    ds = workitem()
    ds["00404018"] = sq({"00080100": v("SH"), "00080102": v("SH", "99AIW"), "00080104": v("LO", "m")})
    assert problems_at(ds) == {"(0040,4018)[0]": "0121"}


@pytest.mark.parametrize("alt", [("00080119", "UC", "AIW-" + "X" * 40), ("00080120", "UR", "urn:oid:1.2.3.4")])
def test_long_or_urn_code_value_is_enough(alt: tuple[str, str, str]) -> None:
    tag, vr_, value = alt
    ds = workitem()
    ds["00404018"] = sq({tag: v(vr_, value), "00080104": v("LO", "long code")})
    assert check(ds).ok, check(ds).problems


def test_coding_scheme_designator_is_required_with_a_code_value() -> None:
    ds = workitem()
    del ds["00404018"]["Value"][0]["00080102"]
    assert problems_at(ds) == {"(0040,4018)[0](0008,0102)": "0120"}


def test_input_item_needs_a_retrieval_sequence() -> None:
    ds = workitem()
    del ds["00404021"]["Value"][0]["0040E025"]
    assert problems_at(ds) == {"(0040,4021)[0]": "0120"}
    ds["00404021"]["Value"][0]["0040E021"] = sq({"00080054": v("AE", "PACS")})
    assert check(ds).ok


@pytest.mark.parametrize("value_type,value_tag", [
    ("NUMERIC", "0040A30A"), ("TEXT", "0040A160"), ("DATETIME", "0040A120"), ("DATE", "0040A121"),
    ("TIME", "0040A122"), ("PNAME", "0040A123"), ("UIDREF", "0040A124"), ("CODE", "0040A168"),
])
def test_content_item_needs_the_value_its_value_type_names(value_type: str, value_tag: str) -> None:
    ds = workitem()
    item = {"0040A040": v("CS", value_type), "0040A043": sq(code("P1", "99AIW", "parameter"))}
    ds["00741210"] = sq(item)
    found = problems_at(ds)
    assert found.get(f"(0074,1210)[0]{format_tag(int(value_tag, 16))}") == "0120", found
    # and no other value attribute is demanded
    assert all(p.startswith(f"(0074,1210)[0]{format_tag(int(value_tag, 16))}") or p == "(0074,1210)[0](0040,08EA)"
               for p in found), found


def test_study_and_series_uid_are_required_for_dicom_inputs_only() -> None:
    ds = workitem()
    item = ds["00404021"]["Value"][0]
    del item["0020000D"], item["0020000E"]
    assert problems_at(ds) == {"(0040,4021)[0](0020,000D)": "0120", "(0040,4021)[0](0020,000E)": "0120"}
    item["0040E020"] = v("CS", "CDA")
    for ref in item["00081199"]["Value"]:
        ref["0040E001"] = v("ST", "2.16.840.1.1^doc")
    assert check(ds).ok, check(ds).problems


def test_hl7_instance_identifier_is_required_for_cda_inputs() -> None:
    """Its condition is on Type of Instances of the enclosing item (PS3.3 Table 10-3b)."""
    ds = workitem()
    item = ds["00404021"]["Value"][0]
    item["0040E020"] = v("CS", "CDA")
    found = problems_at(ds)
    assert found == {f"(0040,4021)[0](0008,1199)[{n}](0040,E001)": "0120" for n in range(3)}


# ----------------------------------------------- VRs and values
@pytest.mark.parametrize("tag,wrong", [
    ("00100020", "SH"), ("00404005", "DA"), ("00404018", "LO"), ("00741200", "LO"), ("00741204", "SQ"),
    ("00100010", "LO"), ("0020000D", "LO"),
])
def test_wrong_vr_for_a_tag_is_reported(tag: str, wrong: str) -> None:
    ds = workitem()
    ds[tag] = {**ds[tag], "vr": wrong}
    found = problems_at(ds)
    path = format_tag(int(tag, 16))
    assert path in found, found
    assert "VR" in next(str(p) for p in check(ds).problems if p.path == path)


def test_unknown_vr_and_malformed_elements() -> None:
    ds = workitem()
    ds["00100020"] = {"vr": "XX", "Value": ["P"]}
    ds["00100030"] = "19700101"
    ds["00404041"] = {"vr": "CS", "Value": "READY"}
    ds["00741204"] = {"vr": "LO", "Value": ["x"], "InlineBinary": "AAAA"}
    ds["00741202"] = {"vr": "LO", "Value": ["x"], "extra": 1}
    ds["bad!"] = v("LO", "x")
    ds["0010002a"] = v("LO", "x")
    paths = problems_at(ds)
    assert {"(0010,0020)", "(0010,0030)", "(0040,4041)", "(0074,1204)", "(0074,1202)"} <= set(paths)
    assert "" in paths  # the two bad property names are reported at the dataset level
    messages = " ".join(str(p) for p in check(ds).problems)
    assert "'bad!'" in messages and "'0010002a'" in messages


INVALID: dict[str, list[Any]] = {
    "UI": ["1.02.3", "1..2", "a.b.c", "1.2.", ".1.2", "1.2.3 ", "1." + "2" * 63, 123],
    "DA": ["2024-01-01", "20241301", "20240230", "2024011", "abcdefgh", "202401011", 20240101],
    "DT": ["20241301", "2024-01-01T00:00", "202401011230.5", "20240101120000.1234567", "2024013125",
           "20240101+2500", "20240101120000+01", "x"],
    "TM": ["2460", "24", "1260", "12:30", "1230.5", "126", "120000.1234567"],
    "CS": ["lower", "X" * 17, "A-B", "A\\B", "É", "IN\tPROGRESS"],
    "AE": ["A" * 17, "    ", "A\\B", "STATIÖN", "A\nB", "A\x1bB"],
    "DS": ["abc", "1.2.3", "1" * 17, "NaN", "1,5", "", True],
    "IS": ["1.5", "abc", "99999999999", "2147483648", 1.5, "1" * 13],
    "US": [-1, 65536, "5", 1.5, True, [1]],
    "PN": ["DOE^JANE", {"Alphabetic": "X" * 65}, {"Other": "DOE"}, {"Alphabetic": "A^B^C^D^E^F"},
          {"Alphabetic": 5}, {"Alphabetic": "A\\B"}],
    "LO": ["X" * 65, "A\\B", "A\x00B", 5],
    "SH": ["X" * 17, "A\\B", "A\nB"],
    "LT": ["A\x00B", "X" * 10241],
    "ST": ["A\x00B", "X" * 1025],
    "UT": ["A\x00B"],
    "UR": ["http://a b", "http://x "],
    "UC": ["A\\B", "A\x00B"],
}


def _valid_for(tag: int) -> bool:
    return bool(dj.dictionary_vrs(tag))


# (tag, path into the workitem) for each VR: where an invalid value is put
PLACES: dict[str, tuple[str, ...]] = {
    "UI": ("0020000D",), "DA": ("00100030",), "DT": ("00404005",),
    "TM": ("0040A370", "00402005"), "CS": ("00100040",), "AE": ("00404021", "0040E021", "00080054"),
    "DS": ("00741210", "0040A30A"), "IS": ("00200013",), "US": ("001021C0",), "PN": ("00100010",),
    "LO": ("00100020",), "SH": ("0040A370", "00080050"), "LT": ("00400400",), "ST": ("0040A370", "0040E001"),
    "UT": ("00400031",), "UR": ("00404021", "0040E025", "00081190"), "UC": ("00404018", "00080119"),
}


def _put(ds: dict[str, Any], path: tuple[str, ...], vr_: str, value: Any) -> str:
    """Set the element at ``path`` (first item of each sequence) and return its error path."""
    here, text = ds, ""
    for tag in path[:-1]:
        if tag not in here or not here[tag].get("Value"):
            here[tag] = sq({})
        text += f"{format_tag(int(tag, 16))}[0]"
        here = here[tag]["Value"][0]
    here[path[-1]] = {"vr": vr_, "Value": [value]}
    return text + format_tag(int(path[-1], 16))


@pytest.mark.parametrize("vr_,bad", [(k, b) for k, vals in INVALID.items() for b in vals],
                         ids=[f"{k}-{i}" for k, vals in INVALID.items() for i in range(len(vals))])
def test_invalid_value_for_its_vr_is_0106_naming_the_element(vr_: str, bad: Any) -> None:
    assert vr.check_value(vr_, bad) is not None, f"{vr_} {bad!r} should be invalid"
    ds = workitem()
    if vr_ == "AE":
        ds["00404021"]["Value"][0]["0040E021"] = sq({"00080054": v("AE", "PACS")})
    path = _put(ds, PLACES[vr_], vr_, bad)
    found = problems_at(ds)
    assert found.get(path) == "0106", (path, found)


VALID: dict[str, list[Any]] = {
    "UI": ["1.2.840.10008.5.1.4.34.6.1", "0.0", "2.25." + "9" * 59],
    "DA": ["20240229", "19000101", "99991231"],
    "DT": ["2024", "202402", "20240229", "2024022912", "202402291230", "20240229123059", "20240229123059.1",
           "20240229123059.123456", "20240229123059.123456+0100", "2024-0500", "99991231235959.999999-1200",
           "20241231235960", "9999", "999912"],
    "TM": ["00", "2359", "235959", "235959.999999", "235960"],
    "CS": ["IN PROGRESS", "A_1", "READY "],
    "AE": ["PACS", " PACS ", "A" * 16, "a-b.c"],
    "DS": ["10", " -1.5e3 ", ".5", 3.25, 10],
    "IS": ["-2147483648", "2147483647", " 12 ", 7, 3.0],
    "US": [0, 65535],
    "PN": [{"Alphabetic": "DOE^JANE"}, {"Alphabetic": "X" * 64}, {"Alphabetic": "A^B^C^D^E", "Ideographic": "山田^太郎"}, {}],
    "LO": ["X" * 64, "Ünïcode"],
    "UR": ["https://pacs.example/dicom-web/studies/1.2.3"],
}


@pytest.mark.parametrize("vr_,good", [(k, g) for k, vals in VALID.items() for g in vals],
                         ids=[f"{k}-{i}" for k, vals in VALID.items() for i in range(len(vals))])
def test_valid_values_pass(vr_: str, good: Any) -> None:
    assert vr.check_value(vr_, good) is None


@pytest.mark.parametrize("tag,bad", [("00741200", "URGENT"), ("00404041", "DONE"), ("00741000", "CANCELLED"),
                                     ("00100040", "X")])
def test_enumerated_values(tag: str, bad: str) -> None:
    ds = workitem()
    ds[tag] = v("CS", bad)
    found = problems_at(ds)
    assert found == {format_tag(int(tag, 16)): "0106"}
    assert "is not one of" in str(check(ds).problems[0])


def test_enumerated_value_inside_an_item() -> None:
    ds = workitem()
    ds["00741210"]["Value"][0]["0040A040"] = v("CS", "NUMBER")
    assert "(0074,1210)[0](0040,A040)" in problems_at(ds)


def test_every_problem_of_a_multi_valued_element_names_the_value() -> None:
    ds = workitem()
    ds["00100020"] = v("LO", "ok", "bad\\one")
    assert problems_at(ds) == {"(0010,0020)[1]": "0106"}


def test_absurd_nesting_is_refused_not_stored() -> None:
    ds = workitem()
    inner: dict[str, Any] = {"00091010": v("LO", "x")}
    for _ in range(validation.MAX_SEQUENCE_DEPTH + 5):
        inner = {"00091010": sq(inner)}
    ds["00091010"] = inner["00091010"]
    out = check(ds)
    assert not out.ok and "nested" in str(out.problems[0])


# ============================================================== N-SET
def test_empty_update_is_valid_and_adds_nothing() -> None:
    out = check({}, "set")
    assert out.ok and out.added == []


@pytest.mark.parametrize("ds", [progress(40, "model running"), performed(), {"00741200": v("CS", "HIGH")},
                                {"00404041": v("CS", "READY")}, {"00404011": v("DT", "20261122120000")},
                                {"00741210": workitem()["00741210"]}])
def test_valid_updates(ds: dict[str, Any]) -> None:
    out = check(ds, "set")
    assert out.ok, out.problems


def test_performed_processing_parameters_can_be_reported() -> None:
    """Spec sec. 6.5: results echo actual parameters in Performed Processing Parameters Sequence."""
    ds = performed()
    ds["00741216"]["Value"][0]["00741212"] = workitem()["00741210"]
    assert check(ds, "set").ok, check(ds, "set").problems
    del ds["00741216"]["Value"][0]["00741212"]["Value"][0]["0040A30A"]
    assert problems_at(ds, "set") == {"(0074,1216)[0](0074,1212)[0](0040,A30A)": "0120"}


@pytest.mark.parametrize("tag,el", [
    ("00100010", v("PN", {"Alphabetic": "ROE^RICHARD"})), ("00100020", v("LO", "P2")),
    ("00741000", v("CS", "COMPLETED")), ("0040A370", sq()), ("00080018", v("UI", "1.2.3")),
    ("00100021", v("LO", "X")), ("00100030", v("DA", "19800101")), ("00741224", sq()),
    ("00080016", v("UI", "1.2.840.10008.5.1.4.34.6.1")),
])
def test_not_allowed_in_n_set_is_0105(tag: str, el: dict[str, Any]) -> None:
    found = problems_at({tag: el}, "set")
    assert found == {format_tag(int(tag, 16)): "0105"}
    assert "may not be changed" in str(check({tag: el}, "set").problems[0])


def test_not_allowed_nested_in_n_set() -> None:
    # Issuer of Patient ID inside Other Patient IDs Sequence (N-SET 3/3 itself)
    ds = {"00101002": sq({"00100020": v("LO", "OTHER"), "00100021": v("LO", "HOSP")})}
    assert problems_at(ds, "set") == {"(0010,1002)[0](0010,0021)": "0105"}


@pytest.mark.parametrize("tag,vr_", [("00741200", "CS"), ("00404005", "DT"), ("00404018", "SQ"), ("00404041", "CS")])
def test_n_set_cannot_empty_what_the_scp_must_keep(tag: str, vr_: str) -> None:
    assert problems_at({tag: {"vr": vr_}}, "set") == {format_tag(int(tag, 16)): "0121"}


def test_n_set_may_empty_type_2() -> None:
    assert check({"00404025": sq(), "00741002": sq()}, "set").ok


def test_n_set_nested_type_1() -> None:
    ds = {"00741002": sq({"00741004": v("DS", "10"), "00741008": sq({"0074100C": v("LO", "me")})})}
    assert problems_at(ds, "set") == {"(0074,1002)[0](0074,1008)[0](0074,100A)": "0120"}


# ============================================================== final states
def test_completed_needs_the_performed_procedure_information() -> None:
    ds = stored()
    found = {p.path: p.status for p in validation.final_state_problems(ds, "COMPLETED")}
    assert found == {"(0074,1216)": "C304"}
    ds.update(performed())
    assert validation.final_state_problems(ds, "COMPLETED") == []


@pytest.mark.parametrize("missing", ["00404028", "00404050", "00404019", "00404051", "00404033"])
def test_completed_names_each_missing_performed_attribute(missing: str) -> None:
    ds = stored()
    ds.update(performed())
    del ds["00741216"]["Value"][0][missing]
    paths = [p.path for p in validation.final_state_problems(ds, "COMPLETED")]
    assert paths == [f"(0074,1216)[0]{format_tag(int(missing, 16))}"]


def test_completed_accepts_an_empty_output_information_sequence_but_not_an_empty_station() -> None:
    ds = stored()
    ds.update(performed(outputs=[]))
    assert ds["00741216"]["Value"][0]["00404033"] == {"vr": "SQ"}
    assert validation.final_state_problems(ds, "COMPLETED") == []
    ds["00741216"]["Value"][0]["00404028"] = sq()
    assert [p.path for p in validation.final_state_problems(ds, "COMPLETED")] == ["(0074,1216)[0](0040,4028)"]


def test_canceled_needs_cancellation_datetime_and_reason_not_performed_information() -> None:
    ds = stored()
    found = [p.path for p in validation.final_state_problems(ds, "CANCELED")]
    assert found == ["(0074,1002)"]
    ds["00741002"] = sq({"00404052": v("DT", "20261122101000")})
    assert [p.path for p in validation.final_state_problems(ds, "CANCELED")] == ["(0074,1002)[0](0074,100E)"]
    ds["00741002"]["Value"][0]["0074100E"] = sq(code("110513", "DCM", "Discontinued for unspecified reason"))
    assert validation.final_state_problems(ds, "CANCELED") == []
    # ... which COMPLETED does not need, while CANCELED does not need the P attributes
    assert [p.path for p in validation.final_state_problems(ds, "COMPLETED")] == ["(0074,1216)"]


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED"])
@pytest.mark.parametrize("tag", ["00080016", "00080018", "00741200", "00404010", "00404005", "00404041", "00741000"])
def test_r_attributes_are_needed_for_both_final_states(target: str, tag: str) -> None:
    ds = stored()
    ds.update(performed())
    ds["00741002"] = sq({"00404052": v("DT", "20261122101000"),
                         "0074100E": sq(code("110513", "DCM", "Discontinued for unspecified reason"))})
    assert validation.final_state_problems(ds, target) == []
    ds[tag] = {"vr": ds[tag]["vr"]}  # present but empty
    assert [(p.path, p.status) for p in validation.final_state_problems(ds, target)] == [(format_tag(int(tag, 16)), "C304")]


# ============================================================== properties
LO_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters="\\"),
                  min_size=1, max_size=64).filter(lambda s: s.strip() != "")
SH_TEXT = LO_TEXT.map(lambda s: s[:16]).filter(lambda s: s.strip() != "")
AE_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="\\"), min_size=1, max_size=16)
CS_TEXT = st.text(st.sampled_from(string.ascii_uppercase + string.digits + "_ "), min_size=1, max_size=16).filter(
    lambda s: s.strip() != "")
PN_TEXT = st.lists(st.text(st.characters(min_codepoint=0x41, max_codepoint=0x5A), min_size=1, max_size=10),
                   min_size=1, max_size=5).map("^".join)
INSTANTS = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 12, 31))
OFFSETS = st.sampled_from(["", "+0000", "+0100", "-0500", "+1400", "-1200", "+0530"])


@st.composite
def dt_values(draw: st.DrawFn) -> str:
    t = draw(INSTANTS)
    full = t.strftime("%Y%m%d%H%M%S")
    cut = draw(st.sampled_from([4, 6, 8, 10, 12, 14, 15]))
    text = full if cut == 15 else full[:cut]
    if cut == 15:
        text += "." + f"{t.microsecond:06d}"[: draw(st.integers(1, 6))]
    return text + draw(OFFSETS)


UID = st.lists(st.integers(0, 10**12), min_size=2, max_size=8).map(lambda xs: ".".join(map(str, xs))).filter(
    lambda u: len(u) <= 64)


def _append(ds: dict[str, Any], tag: str, item: dict[str, Any]) -> None:
    ds[tag] = sq(*(ds.get(tag, {}).get("Value") or []), item)


@st.composite
def valid_workitems(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A factory workitem under random valid mutations; also the type 2 paths deleted."""
    ds = workitem(patient_id=draw(LO_TEXT), accession=draw(SH_TEXT.map(lambda a: a[:13])), label=draw(LO_TEXT),
                  worklist=draw(LO_TEXT), priority=draw(st.sampled_from(["HIGH", "MEDIUM", "LOW"])),
                  readiness=draw(st.sampled_from(["READY", "INCOMPLETE", "UNAVAILABLE"])),
                  start=draw(dt_values()), patient_name=draw(PN_TEXT),
                  series_uids=tuple(draw(st.lists(UID, min_size=1, max_size=3, unique=True))),
                  station=draw(st.none() | st.tuples(SH_TEXT, SH_TEXT, LO_TEXT)),
                  workitem_code=draw(st.tuples(SH_TEXT, SH_TEXT, LO_TEXT)))
    deleted: set[str] = set()
    ops = draw(st.lists(st.sampled_from([
        "birth", "sex", "expected", "human", "output-stow", "output-dicom", "long-code", "urn-code",
        "dicom-retrieval", "pregnancy", "text-param", "code-param", "drop-type2", "empty-type2",
        "expiration", "study-empty", "other-pid"]), max_size=6, unique=True))
    for op in ops:
        if op == "birth":
            ds["00100030"] = v("DA", draw(INSTANTS).strftime("%Y%m%d"))
        elif op == "sex":
            ds["00100040"] = v("CS", draw(st.sampled_from(["M", "F", "O"])))
        elif op == "expected":
            ds["00404011"] = v("DT", draw(dt_values()))
        elif op == "expiration":
            ds["00404008"] = v("DT", draw(dt_values()))
        elif op == "human":
            ds["00404034"] = sq({"00404009": sq(code(draw(SH_TEXT), "99AIW", draw(LO_TEXT))),
                                 "00404037": v("PN", {"Alphabetic": draw(PN_TEXT)}), "00404036": v("LO", draw(LO_TEXT))})
        elif op == "output-stow":
            ds["00404070"] = sq({"00404072": sq({"00404073": v("UR", "https://pacs.example/dicom-web")})})
        elif op == "output-dicom":
            ds["00404070"] = sq({"00404071": sq({"21000140": v("AE", draw(AE_TEXT))})})
        elif op == "long-code":
            _append(ds, "00404018", {"00080119": v("UC", draw(LO_TEXT)), "00080104": v("LO", draw(LO_TEXT))})
        elif op == "urn-code":
            _append(ds, "00404018", {"00080120": v("UR", "urn:oid:" + draw(UID)), "00080104": v("LO", "x")})
        elif op == "dicom-retrieval":
            ds["00404021"]["Value"][0]["0040E021"] = sq({"00080054": v("AE", draw(AE_TEXT))})
        elif op == "pregnancy":
            ds["001021C0"] = v("US", draw(st.integers(1, 4)))
        elif op == "text-param":
            _append(ds, "00741210", {"0040A040": v("CS", "TEXT"), "0040A043": sq(code("T", "99AIW", "t")),
                                            "0040A160": v("UT", draw(st.text(min_size=1, max_size=200).filter(
                                                lambda s: s.strip() != "" and not vr._CONTROL_TEXT.search(s))))})
        elif op == "code-param":
            _append(ds, "00741210", {"0040A040": v("CS", "CODE"), "0040A043": sq(code("C", "99AIW", "c")),
                                            "0040A168": sq(code(draw(SH_TEXT), "99AIW", draw(LO_TEXT)))})
        elif op == "drop-type2":
            tag = draw(st.sampled_from(["00100010", "00380010", "00404026", "00741002", "00400400", "00081084"]))
            ds.pop(tag, None)
            deleted.add(format_tag(int(tag, 16)))
        elif op == "empty-type2":
            tag = draw(st.sampled_from(["00100010", "00100020", "00404025", "00404018", "0040A370", "00741210"]))
            ds[tag] = {"vr": dj.dictionary_vrs(int(tag, 16))[0]}
            deleted.discard(format_tag(int(tag, 16)))
        elif op == "study-empty":
            ds["0020000D"] = v("UI")
        elif op == "other-pid":
            ds["00101002"] = sq({"00100020": v("LO", draw(LO_TEXT)), "00100022": v("CS", "TEXT")})
    return ds, deleted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_workitems())
def test_valid_workitems_stay_valid(case: tuple[dict[str, Any], set[str]]) -> None:
    ds, deleted = case
    out = validation.check(ds, "create")
    assert out.ok, [str(p) for p in out.problems]
    assert deleted <= set(out.added)


def _type1_paths(ds: dict[str, Any], rules: dict[int, AttributeRule], path: str = "") -> list[tuple[str, list[Any]]]:
    """(error path, key path) of every unconditional type 1 element present."""
    out = []
    for tag, rule in rules.items():
        k = dj.key(tag)
        if k not in ds:
            continue
        here = f"{path}{format_tag(tag)}"
        if rule.create.scu == "1" and not rule.condition:
            out.append((here, [k]))
        if rule.children and isinstance(ds[k].get("Value"), list):
            for n, item in enumerate(ds[k]["Value"]):
                for p, keys in _type1_paths(item, rule.children, f"{here}[{n}]"):
                    out.append((p, [k, n, *keys]))
    return out


def _elements(ds: dict[str, Any], path: str = "", keys: tuple[Any, ...] = ()) -> list[tuple[str, tuple[Any, ...], dict]]:
    out = []
    for k, el in ds.items():
        here = f"{path}{format_tag(int(k, 16))}"
        out.append((here, (*keys, k), el))
        if el.get("vr") == "SQ":
            for n, item in enumerate(el.get("Value") or []):
                out += _elements(item, f"{here}[{n}]", (*keys, k, n))
    return out


def _parent(ds: dict[str, Any], keys: tuple[Any, ...]) -> dict[str, Any]:
    here: Any = ds
    for k in keys[:-1]:
        here = here[k]["Value"] if isinstance(k, str) else here[k]
    return here


OTHER_VRS = sorted(vr.ALL_VRS - {"UN"})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_single_corruption_is_reported_at_the_element(data: st.DataObject) -> None:
    ds = workitem(series_uids=("1.2.3.4", "1.2.3.5"))
    kind = data.draw(st.sampled_from(["vr", "value", "delete"]), label="kind")
    if kind == "delete":
        candidates = _type1_paths(ds, ups_attributes())
        path, keys = data.draw(st.sampled_from(candidates), label="type 1")
        del _parent(ds, tuple(keys))[keys[-1]]
        expected = {"0120"}
    else:
        elements = _elements(ds)
        path, keys, el = data.draw(st.sampled_from(elements), label="element")
        tag = int(keys[-1], 16)
        allowed = set(dj.dictionary_vrs(tag))
        if kind == "vr":
            wrong = data.draw(st.sampled_from([x for x in OTHER_VRS if x not in allowed
                                               and not ("OB" in allowed and x == "OW")]), label="vr")
            el["vr"] = wrong
        else:
            assume(el["vr"] in INVALID)
            el["Value"] = [data.draw(st.sampled_from(INVALID[el["vr"]]), label="value")]
        expected = {"0106"}
    found = problems_at(ds)
    assert path in found, (kind, path, found)
    assert found[path] in expected


# ---------------------------------------------------------------- the fast path of the VR checks
_FAST_ALPHABET = string.ascii_letters + string.digits + " ._-+^\\\t\n\r\x00\x1b\x7fé.eE:/" + "0123456789" * 3


@pytest.mark.parametrize("vr_name", sorted(vr._FAST_VALID))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(alphabet=_FAST_ALPHABET, max_size=70))
def test_fast_path_accepts_only_what_the_full_check_accepts(vr_name: str, value: str) -> None:
    """vr.checker skips the rule-by-rule check when a value matches the VR's fast pattern:
    that is only sound if the full check accepts every such value."""
    if vr.fast_valid(vr_name, value):
        assert vr.check_string(vr_name, value) is None, (vr_name, value)
    assert vr.checker(vr_name)(value) == vr.check_value(vr_name, value)


@settings(max_examples=400, deadline=None)
@given(value=st.from_regex(r"[0-9]{8}", fullmatch=True))
def test_fast_dates_are_dates(value: str) -> None:
    """DA's fast pattern takes only dates every calendar has (day 01-28): the full check
    accepts each, and refuses what the pattern leaves to it as it did before."""
    if vr.fast_valid("DA", value):
        assert vr.check_string("DA", value) is None, value
    assert vr.checker("DA")(value) == vr.check_value("DA", value)


@pytest.mark.parametrize("vr_name,value", [
    ("DA", "20240230"), ("DA", "20241301"), ("DA", "2024010"),
    ("IS", "   123456789   "), ("IS", "2147483648"), ("DS", "1234567890.1234567"), ("DS", " 1e5\n"),
    ("UI", "1.2.03"), ("UI", "1." * 40 + "1"), ("UI", ""), ("CS", "lower"), ("CS", "A" * 17), ("SH", "x" * 17),
    ("LO", "a\\b"), ("UR", "http://a b"), ("AS", "12Y"), ("AT", "0010001G"),
])
def test_fast_path_leaves_invalid_values_to_the_full_check(vr_name: str, value: str) -> None:
    assert not vr.fast_valid(vr_name, value)
    assert vr.checker(vr_name)(value) == vr.check_string(vr_name, value) is not None
