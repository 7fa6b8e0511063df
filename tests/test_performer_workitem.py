"""What the performer reads from and writes into a workitem (``performers.workitem``) and
what the requester builds (``requester_cli.builder``), checked against the one validation
engine (``upsrs.validation``, Table CC.2.5-3) and the spec digest sec. 6.5.

Every dataset either module builds must pass N-CREATE / N-SET validation, and once
applied to a workitem (the Task Manager's shallow merge of an Update) the final-state
checks of COMPLETED / CANCELED. Codes over 16 characters go to Long Code Value; the
reference model's parameters survive builder → workitem → ``workitem.parameters()``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from performers import synthetic
from performers import workitem as wi
from performers.models import lesions
from performers.models.base import DISCONTINUATION, Code
from requester_cli import builder as b
from upsrs import dicomjson as dj
from upsrs import validation

MR = "1.2.840.10008.5.1.4.1.1.4"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR = "1.2.840.10008.5.1.4.1.1.88.34"
WADO = "http://pacs.example/dicom-web"
LESIONS = ("AIW-FLAIR-LES", "99AIW", "FLAIR hyperintense lesion detection")
TF_MEANING = lesions.PARAMETERS[lesions.THRESHOLD_FACTOR][0]
MIN_MEANING = lesions.PARAMETERS[lesions.MIN_LESION_MM3][0]
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- helpers

def series(study: str, uid: str, n: int = 2, url: bool = True) -> b.SeriesRef:
    return b.SeriesRef(study, uid, "MR", "AX FLAIR", tuple((MR, f"{uid}.{i}") for i in range(1, n + 1)),
                       f"{WADO}/studies/{study}/series/{uid}" if url else None)


def study(uid: str = "1.2.826.1.1", *, n_series: int = 1) -> b.StudyRef:
    return b.StudyRef(uid, "PAT-1", "HOSP", "DOE^JANE", "19700101", "F", "ACC-1",
                      {"00400031": dj.element("UT", "RIS")}, "20261101", "MR brain", "RP-1",
                      tuple(series(uid, f"{uid}.{k}") for k in range(1, n_series + 1)))


def procedure(code: tuple[str, str, str] = LESIONS, **kw: Any) -> b.Procedure:
    return b.Procedure(code, "MS lesion follow-up", **kw)


def created(doc: dict[str, Any]) -> dict[str, Any]:
    """The N-CREATE payload must pass; returns the workitem as the Task Manager keeps it
    (type 2 attributes added, SOP Instance UID and modification time stamped)."""
    ds = copy.deepcopy(doc)
    out = validation.check(ds, "create")
    assert out.ok, out.problems
    ds.pop("00081195", None)
    ds["00080018"] = dj.element("UI", "2.25.4242")
    ds["00404010"] = dj.element("DT", "20261122100000")
    return ds


def apply(workitem: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """An Update must pass N-SET validation; applied as the Task Manager does (top level)."""
    out = validation.check(copy.deepcopy(update), "set")
    assert out.ok, out.problems
    return {**workitem, **update}


def final(workitem: dict[str, Any], state: str) -> dict[str, Any]:
    problems = validation.final_state_problems(workitem, state)
    assert problems == [], problems
    return {**workitem, "00741000": dj.element("CS", state)}


def code_tags(item: dict[str, Any]) -> set[str]:
    return set(item) & {"00080100", "00080119", "00080120"}


# text within a VR: no control characters (JSON cannot carry surrogates), no backslash
# (the value delimiter), not blank
def text(max_size: int, min_size: int = 1) -> st.SearchStrategy[str]:
    chars = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\")
    return st.text(chars, min_size=min_size, max_size=max_size).filter(lambda s: s.strip() != "")


codes = st.tuples(text(64), text(16), text(64))  # value (SH or UC), scheme (SH), meaning (LO)


# ================================================================ builder: N-CREATE

def test_built_workitem_from_a_synthetic_study_is_valid_and_linked() -> None:
    current, prior = synthetic.make_pair(3, shape=(16, 16, 8), spacing=(2.0, 2.0, 3.0), n_lesions=1)
    ref = b.study_from_datasets(current.flair.datasets, WADO + "/")
    prior_ref = b.study_from_datasets(prior.flair.datasets, WADO)
    doc = b.build(ref, procedure(priority="HIGH", worklist_label="AI"), ref.series, prior=prior_ref.series,
                  stow_url=f"{WADO}/studies")
    ds = created(doc)
    assert dj.first(ds, 0x0020000D) == current.study_uid
    assert (dj.first(ds, 0x00100020), dj.first(ds, 0x00100021)) == (current.patient_id, current.patient_id_issuer)
    (request,) = dj.items(ds, 0x0040A370)
    assert dj.first(request, 0x00080050) == current.accession
    (issuer,) = dj.items(request, 0x00080051)
    assert dj.first(issuer, 0x00400031) == current.accession_issuer
    assert dj.first(ds, 0x00741200) == "HIGH" and dj.first(ds, 0x00741202) == "AI"
    assert dj.first(ds, 0x00404041) == "READY" and dj.first(ds, 0x00741000) == "SCHEDULED"
    # inputs: every instance listed, series-level WADO-RS URLs under the service root (no "//")
    found = wi.inputs(ds)
    assert [s.series_uid for s in found] == [current.flair.series_uid, prior.flair.series_uid]
    assert found[0].retrieve_url == f"{WADO}/studies/{current.study_uid}/series/{current.flair.series_uid}"
    assert set(found[0].sop_instances) == {d.SOPInstanceUID for d in current.flair.datasets}
    roles = wi.roles(ds)
    assert roles["current"].study_uid == current.study_uid and roles["prior"].study_uid == prior.study_uid
    assert wi.stow_url(ds) == f"{WADO}/studies"
    assert wi.codes_of(ds, wi.WORKITEM_CODE_SEQ) == [Code(*LESIONS)]


def test_built_workitem_sends_type_2_attributes_empty_so_nothing_is_coerced() -> None:
    doc = b.build(study(), procedure(), study().series)
    out = validation.check(copy.deepcopy(doc), "create")
    assert out.ok and out.added == [], (out.problems, out.added)


def test_built_workitem_with_station_incomplete_readiness_and_expected_end() -> None:
    doc = b.build(study(), procedure(expected_minutes=15, station=("NODE-9", "99AIW", "node nine")),
                  study().series, readiness="INCOMPLETE")
    ds = created(doc)
    assert dj.first(ds, 0x00404041) == "INCOMPLETE"
    assert dj.first(ds, 0x00404011)  # Expected Completion DateTime
    assert wi.codes_of(ds, 0x00404025) == [Code("NODE-9", "99AIW", "node nine")]
    assert wi.stow_url(ds) is None


@PROPERTY
@given(workitem_code=codes, station=codes, name=codes, value=codes)
def test_any_code_within_vr_limits_builds_a_valid_workitem(workitem_code: tuple[str, str, str],
                                                           station: tuple[str, str, str],
                                                           name: tuple[str, str, str],
                                                           value: tuple[str, str, str]) -> None:
    doc = b.build(study(), procedure(workitem_code, station=station,
                                     parameters=(b.Parameter(name, value),)), study().series)
    ds = created(doc)
    assert wi.codes_of(ds, wi.WORKITEM_CODE_SEQ) == [Code(*workitem_code)]
    assert wi.codes_of(ds, 0x00404025) == [Code(*station)]
    (item,) = dj.items(ds, wi.WORKITEM_CODE_SEQ)
    assert code_tags(item) == ({"00080119"} if len(workitem_code[0]) > 16 else {"00080100"})
    # a CODE parameter reads back as its code value, under the concept's meaning and value
    params = wi.parameters(ds)
    assert params[name[2]] == value[0] and params[name[0]] == value[0]


@pytest.mark.parametrize("length,tag", [(16, "00080100"), (17, "00080119"), (64, "00080119")])
def test_code_value_over_16_characters_goes_to_long_code_value(length: int, tag: str) -> None:
    value = "C" * length
    for item in (b.code_item((value, "99AIW", "m")), wi.code_item(Code(value, "99AIW", "m"))):
        assert code_tags(item) == {tag}
        assert item[tag] == {"vr": "UC" if tag == "00080119" else "SH", "Value": [value]}
        assert wi.codes_of({"00404018": dj.element("SQ", item)}, 0x00404018) == [Code(value, "99AIW", "m")]
    assert wi.code_item(Code("V", "S", "m", "1.0"))["00080103"] == {"vr": "SH", "Value": ["1.0"]}


# ================================================================ parameters round trip

def test_reference_model_parameters_round_trip_by_code_value() -> None:
    params = (b.Parameter((lesions.THRESHOLD_FACTOR, "99AIW", TF_MEANING), 3.5),
              b.Parameter((lesions.MIN_LESION_MM3, "99AIW", MIN_MEANING), 25.0, ("mm3", "UCUM", "cubic millimeter")))
    ds = created(b.build(study(), procedure(parameters=params), study().series))
    got = wi.parameters(ds)
    assert got[lesions.THRESHOLD_FACTOR] == 3.5 and got[lesions.MIN_LESION_MM3] == 25.0
    assert got[TF_MEANING] == 3.5 and got[MIN_MEANING] == 25.0
    assert lesions._parameters(got) == {lesions.THRESHOLD_FACTOR: 3.5, lesions.MIN_LESION_MM3: 25.0}
    (_, second) = dj.items(ds, wi.PARAMETERS_SEQ)
    assert wi.codes_of(second, wi.UNITS_SEQ) == [Code("mm3", "UCUM", "cubic millimeter")]


def test_reference_model_parameters_found_by_meaning_under_another_code() -> None:
    params = (b.Parameter(("AIW-TF", "99SITE", TF_MEANING), 2.25),)
    got = wi.parameters(created(b.build(study(), procedure(parameters=params), study().series)))
    assert lesions._parameters(got) == {lesions.THRESHOLD_FACTOR: 2.25,
                                        lesions.MIN_LESION_MM3: lesions.PARAMETERS[lesions.MIN_LESION_MM3][1]}


def test_text_code_and_unitless_numeric_parameters() -> None:
    params = (b.Parameter(("mode", "99AIW", "Mode"), "fast"),
              b.Parameter(("site", "99AIW", "Site"), ("12738006", "SCT", "Brain")),
              b.Parameter(("n", "99AIW", "N"), 7))
    ds = created(b.build(study(), procedure(parameters=params), study().series))
    got = wi.parameters(ds)
    assert (got["mode"], got["site"], got["n"]) == ("fast", "12738006", 7.0)
    assert (got["Mode"], got["Site"], got["N"]) == ("fast", "12738006", 7.0)
    (_, _, numeric) = dj.items(ds, wi.PARAMETERS_SEQ)
    assert wi.codes_of(numeric, wi.UNITS_SEQ) == [Code("1", "UCUM", "no units")]


@PROPERTY
@given(name=codes,
       # 2-digit exponents here: the 3-digit case has a test of its own below
       number=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e99, max_value=1e99)
       .filter(lambda x: x == 0 or abs(x) >= 1e-99) | st.integers(-10**9, 10**9),
       words=text(200))
def test_any_numeric_or_text_parameter_round_trips(name: tuple[str, str, str], number: float, words: str) -> None:
    numeric = b.Parameter(name, number)
    textual = b.Parameter(("note", "99AIW", "Note"), words)
    ds = created(b.build(study(), procedure(parameters=(numeric, textual)), study().series))
    got = wi.parameters(ds)
    assert got[name[0]] == pytest.approx(float(number), rel=1e-9, abs=1e-300)
    assert got["note"] == words


def test_parameters_ignore_items_without_a_concept_or_value() -> None:
    doc = {"00741210": dj.element("SQ",
                                  {"0040A040": dj.element("CS", "NUMERIC"), "0040A30A": dj.element("DS", "3")},
                                  {"0040A040": dj.element("CS", "NUMERIC"),
                                   "0040A043": dj.element("SQ", b.code_item(("x", "99AIW", "X"))),
                                   "0040A30A": {"vr": "DS"}},
                                  {"0040A040": dj.element("CS", "DATETIME"),
                                   "0040A043": dj.element("SQ", b.code_item(("when", "99AIW", "When"))),
                                   "0040A120": dj.element("DT", "20260101120000")})}
    assert wi.parameters(doc) == {"when": "20260101120000", "When": "20260101120000"}


def test_builder_numeric_parameter_is_a_valid_ds_for_every_finite_value() -> None:
    doc = b.build(study(), procedure(parameters=(b.Parameter(("p", "99AIW", "P"), -1.234567891e-100),)),
                  study().series)
    out = validation.check(doc, "create")
    assert out.ok, out.problems


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_builder_refuses_a_non_finite_numeric_parameter(value: float) -> None:
    with pytest.raises(ValueError):
        doc = b.build(study(), procedure(parameters=(b.Parameter(("p", "99AIW", "P"), value),)), study().series)
        out = validation.check(doc, "create")
        assert out.ok, out.problems  # a valid encoding would also do
        raise ValueError("encoded validly")


def test_builder_refuses_an_input_series_without_instances() -> None:
    bare = b.SeriesRef("1.2.826.1.1", "1.2.826.1.1.1", "MR",
                       retrieve_url=f"{WADO}/studies/1.2.826.1.1/series/1.2.826.1.1.1")
    with pytest.raises(ValueError):
        doc = b.build(study(), procedure(), (bare,))
        out = validation.check(doc, "create")
        assert out.ok, out.problems  # a valid payload would also do
        raise ValueError("built validly")


# ================================================================ reading inputs

def test_roles_current_is_the_workitems_study_prior_another_study() -> None:
    cur = study("1.2.826.1.1", n_series=2)
    old = study("1.2.826.2.2")
    doc = b.build(cur, procedure(), cur.series, prior=old.series)
    doc["00404021"]["Value"].reverse()  # order must not matter: the prior is listed first now
    roles = wi.roles(doc)
    assert roles["prior"].series_uid == old.series[0].series_uid
    # two series of the current study: the first listed of them
    assert roles["current"].series_uid == cur.series[1].series_uid
    assert set(roles) == {"current", "prior"}


def test_roles_without_a_prior_and_without_a_workitem_study() -> None:
    cur = study()
    doc = b.build(cur, procedure(), cur.series)
    assert set(wi.roles(doc)) == {"current"}
    del doc["0020000D"]  # no study named: the first input is where results go
    assert wi.roles(doc)["current"].series_uid == cur.series[0].series_uid
    only_other = b.build(cur, procedure(), study("1.2.826.9.9").series)
    assert set(wi.roles(only_other)) == {"prior"}  # no input of the workitem's study: no current


def test_inputs_read_url_and_instances_and_skip_items_without_a_series() -> None:
    cur = study()
    doc = b.build(cur, procedure(), (series(cur.study_uid, "1.2.826.1.1.5", n=3, url=False), *cur.series))
    doc["00404021"]["Value"].append({"0040E020": dj.element("CS", "DICOM"),
                                     "0020000D": dj.element("UI", cur.study_uid)})
    # a WADO-RS item without a URL before one with: the first URL is used
    doc["00404021"]["Value"][1]["0040E025"]["Value"].insert(0, {"00081190": {"vr": "UR"}})
    found = wi.inputs(doc)
    assert [s.series_uid for s in found] == ["1.2.826.1.1.5", cur.series[0].series_uid]
    assert found[0].retrieve_url is None
    assert found[0].sop_instances == ("1.2.826.1.1.5.1", "1.2.826.1.1.5.2", "1.2.826.1.1.5.3")
    assert found[1].retrieve_url == cur.series[0].retrieve_url


def test_stow_url_reads_the_output_destination_sequence() -> None:
    doc = b.build(study(), procedure(), study().series, stow_url="http://archive.example/dicomweb")
    assert wi.stow_url(doc) == "http://archive.example/dicomweb"
    created(doc)
    # several destinations: the first with a STOW-RS URL; a DICOM (AE) destination has none
    doc["00404070"] = dj.element("SQ", {"21000140": dj.element("AE", "ARCHIVE")},
                                 {"00404072": dj.element("SQ", {"00404073": {"vr": "UR"}},
                                                         {"00404073": dj.element("UR", "http://second/rs")})})
    assert wi.stow_url(doc) == "http://second/rs"
    assert wi.stow_url({"00404070": {"vr": "SQ"}}) is None
    assert wi.stow_url({}) is None


# ================================================================ writing: Update datasets

def _outputs() -> list[wi.OutputInstance]:
    st1, st2 = "1.2.826.1.1", "1.2.826.7.7"
    url = f"{WADO}/studies/{st1}/series/9.1/instances/9.1.1"
    return [wi.OutputInstance(st1, "9.1", SEG, "9.1.1", url),
            wi.OutputInstance(st1, "9.2", SR, "9.2.1", f"{WADO}/studies/{st1}/series/9.2/instances/9.2.1"),
            wi.OutputInstance(st1, "9.1", SEG, "9.1.2", f"{WADO}/studies/{st1}/series/9.1/instances/9.1.2"),
            wi.OutputInstance(st2, "9.1", SEG, "9.1.9", f"{WADO}/studies/{st2}/series/9.1/instances/9.1.9")]


def test_output_information_one_item_per_series_with_a_series_url() -> None:
    items = wi.output_information(_outputs())
    assert len(items) == 3
    by = {(dj.first(i, wi.STUDY_UID), dj.first(i, wi.SERIES_UID)): i for i in items}
    seg = by[("1.2.826.1.1", "9.1")]
    assert dj.first(seg, wi.TYPE_OF_INSTANCES) == "DICOM"
    assert [(dj.first(r, wi.REFERENCED_SOP_CLASS), dj.first(r, wi.REFERENCED_SOP_INSTANCE))
            for r in dj.items(seg, wi.REFERENCED_SOP_SEQ)] == [(SEG, "9.1.1"), (SEG, "9.1.2")]
    assert [dj.first(r, wi.RETRIEVE_URL) for r in dj.items(seg, wi.WADO_RS_SEQ)] == \
        [f"{WADO}/studies/1.2.826.1.1/series/9.1"]
    sr = by[("1.2.826.1.1", "9.2")]
    assert [dj.first(r, wi.RETRIEVE_URL) for r in dj.items(sr, wi.WADO_RS_SEQ)] == \
        [f"{WADO}/studies/1.2.826.1.1/series/9.2"]
    other = by[("1.2.826.7.7", "9.1")]  # same series UID in another study: an item of its own
    assert [dj.first(r, wi.REFERENCED_SOP_INSTANCE) for r in dj.items(other, wi.REFERENCED_SOP_SEQ)] == ["9.1.9"]
    assert [dj.first(r, wi.RETRIEVE_URL) for r in dj.items(other, wi.WADO_RS_SEQ)] == \
        [f"{WADO}/studies/1.2.826.7.7/series/9.1"]


def test_output_without_a_retrieve_url_is_refused() -> None:
    """The Referenced Instances and Access macro needs a way to retrieve the outputs."""
    with pytest.raises(ValueError, match="9.1 has no WADO-RS Retrieve URL"):
        wi.performed(station=Code("N", "99AIW", "n"), workitem_code=Code(*LESIONS), start="20261122100000",
                     end="20261122100000", parameters={},
                     outputs=[wi.OutputInstance("1.2.826.1.1", "9.1", SEG, "9.1.1", None)])


def test_series_url_from_an_instance_url() -> None:
    assert wi.series_url(f"{WADO}/studies/1.2/series/3.4/instances/5.6", "1.2", "3.4") == \
        f"{WADO}/studies/1.2/series/3.4"
    assert wi.series_url(None, "1.2", "3.4") is None


def test_series_url_keeps_a_service_root_that_contains_studies() -> None:
    base = "http://pacs.example/studies/dicom-web"
    assert wi.series_url(f"{base}/studies/1.2/series/3.4/instances/5.6", "1.2", "3.4") == \
        f"{base}/studies/1.2/series/3.4"


def test_progress_update_is_valid_and_truncates_the_description() -> None:
    ds = created(b.build(study(), procedure(), study().series))
    for update in (wi.progress(35, "Running the model"), wi.progress(99.6, "x" * 5000)):
        applied = apply(ds, update)
        (item,) = dj.items(applied, wi.PROGRESS_SEQ)
        assert len(dj.first(item, wi.PROGRESS_DESCRIPTION)) <= 1024
    assert dj.first(dj.items(wi.progress(99.6, "d"), wi.PROGRESS_SEQ)[0], wi.PROGRESS) == "100"


def _in_progress() -> dict[str, Any]:
    ds = created(b.build(study(), procedure(), study().series))
    ds["00741000"] = dj.element("CS", "IN PROGRESS")
    return apply(ds, wi.progress(35, "Running the model"))


def test_performed_meets_the_completed_final_state() -> None:
    ds = _in_progress()
    update = wi.performed(station=Code("AIW-NODE-1", "99AIW", "aiw reference performer"),
                          workitem_code=Code(*LESIONS), start="20261122100000.000000+0000",
                          end="20261122100500.000000+0000",
                          parameters={lesions.THRESHOLD_FACTOR: 5.0, lesions.MIN_LESION_MM3: 10.0, "mode": "fast"},
                          outputs=_outputs())
    done = final(apply(ds, update), "COMPLETED")
    (performed,) = dj.items(done, wi.PERFORMED_SEQ)
    assert wi.codes_of(performed, wi.PERFORMED_CODE_SEQ) == [Code(*LESIONS)]
    assert len(dj.items(performed, wi.OUTPUT_INFO_SEQ)) == 3
    echoed = wi.parameters({dj.key(wi.PARAMETERS_SEQ): performed[dj.key(wi.PERFORMED_PARAMETERS_SEQ)]})
    assert echoed[lesions.THRESHOLD_FACTOR] == 5.0 and echoed["mode"] == "fast"


def test_performed_without_outputs_or_parameters_still_completes() -> None:
    update = wi.performed(station=Code("N", "99AIW", "n"), workitem_code=Code(*LESIONS), start="20261122100000",
                          end="20261122100000", parameters={}, outputs=[])
    done = final(apply(_in_progress(), update), "COMPLETED")
    (performed,) = dj.items(done, wi.PERFORMED_SEQ)
    assert performed[dj.key(wi.OUTPUT_INFO_SEQ)] == {"vr": "SQ"}  # type 2: present, empty
    assert dj.key(wi.PERFORMED_PARAMETERS_SEQ) not in performed


@pytest.mark.parametrize("code", sorted(DISCONTINUATION))
def test_discontinuation_meets_the_canceled_final_state(code: str) -> None:
    update = wi.discontinuation(35, "The model failed: " + "x" * 20000, DISCONTINUATION[code])
    done = final(apply(_in_progress(), update), "CANCELED")
    (item,) = dj.items(done, wi.PROGRESS_SEQ)
    assert wi.codes_of(item, wi.DISCONTINUATION_SEQ) == [DISCONTINUATION[code]]
    assert dj.first(item, wi.REASON_FOR_CANCELLATION).startswith("The model failed: ")
    assert len(dj.first(item, wi.REASON_FOR_CANCELLATION)) == 10240
    assert dj.first(item, wi.PROGRESS) == "35" and dj.first(item, wi.CANCEL_DATETIME)


@PROPERTY
@given(station=codes, workitem_code=codes, reason=codes, words=text(300),
       params=st.dictionaries(text(40), st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**12, 10**12)
                              | text(80), max_size=4))
def test_performer_updates_are_valid_for_any_code_within_vr_limits(
        station: tuple[str, str, str], workitem_code: tuple[str, str, str], reason: tuple[str, str, str],
        words: str, params: dict[str, Any]) -> None:
    ds = _in_progress()
    update = wi.performed(station=Code(*station), workitem_code=Code(*workitem_code), start="20261122100000",
                          end="20261122100001", parameters=params, outputs=_outputs())
    done = final(apply(ds, update), "COMPLETED")
    (performed,) = dj.items(done, wi.PERFORMED_SEQ)
    assert wi.codes_of(performed, wi.PERFORMED_STATION_SEQ) == [Code(*station)]
    assert wi.codes_of(performed, wi.PERFORMED_CODE_SEQ) == [Code(*workitem_code)]
    final(apply(ds, wi.discontinuation(50, words, Code(*reason))), "CANCELED")
