"""Search (SearchForUPS, RAD-81): PS3.18 11.9 and 8.3.4, PS3.4 C.2.2.2 — spec §1.3.6, §5, §7 #21, #30.

Every test creates its own workitems under a Worklist Label nobody else uses and always
filters on it, so results are exact even on a shared, busy server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from . import expect, tags
from .api import Ups, encode
from .dicomjson import Dataset, code, code_values, contains_tag, elem, first, pn_text, sq, token
from .workitem import new_workitem

Maker = Callable[..., str]


@pytest.fixture
def make(ups: Ups, label: str) -> Maker:
    """Create a workitem in this test's worklist; keyword arguments go to ``new_workitem``,
    ``extra`` (a dataset) is merged on top. Returns the UID."""

    def _make(extra: Dataset | None = None, **kwargs: object) -> str:
        ds = new_workitem(worklist_label=label, **kwargs)  # type: ignore[arg-type]
        ds.update(extra or {})
        return ups.create_ok(ds)

    return _make


def q(label: str, *terms: str) -> str:
    """A query string scoped to ``label`` plus the given ``key=value`` terms."""
    return "&".join([f"WorklistLabel={encode(label)}", *terms])


def same(found: list[str], expected: list[str]) -> None:
    """Result set equality with a readable message (order is not part of matching)."""
    assert sorted(found) == sorted(expected), f"matched {sorted(found)}, expected {sorted(expected)}"


# --- Single value matching ---------------------------------------------------------------------------
SINGLE_VALUE_KEYS = [
    ("SOPInstanceUID", tags.SOP_INSTANCE_UID),
    ("PatientID", tags.PATIENT_ID),
    ("PatientName", tags.PATIENT_NAME),
    ("IssuerOfPatientID", tags.ISSUER_OF_PATIENT_ID),
    ("PatientBirthDate", tags.PATIENT_BIRTH_DATE),
    ("PatientSex", tags.PATIENT_SEX),
    ("AdmissionID", tags.ADMISSION_ID),
    ("ProcedureStepLabel", tags.PROCEDURE_STEP_LABEL),
    ("ScheduledProcedureStepPriority", tags.PRIORITY),
    ("InputReadinessState", tags.INPUT_READINESS_STATE),
    ("ScheduledProcedureStepStartDateTime", tags.START_DATETIME),
]


@dataclass(frozen=True)
class Pair:
    """Two workitems in one private worklist that differ in every single-value key."""

    label: str
    uids: dict[str, str]
    datasets: dict[str, Dataset]

    def value(self, which: str, tag: str) -> str:
        """The value workitem ``which`` ('A' or 'B') holds for ``tag`` (its UID for SOP Instance UID)."""
        if tag == tags.SOP_INSTANCE_UID:
            return self.uids[which]
        ds = self.datasets[which]
        return pn_text(ds, tag) if tag == tags.PATIENT_NAME else first(ds, tag)


@pytest.fixture(scope="module")
def pair(ups: Ups) -> Pair:
    """Created once per module: the single-value tests only read them."""
    label = token("WL-", 16)
    a = new_workitem(worklist_label=label, patient_name=f"ALPHA^{token('', 6)}", priority="HIGH",
                     readiness="READY", birth_date="19510101", start="20300101100000")
    b = new_workitem(worklist_label=label, patient_name=f"BRAVO^{token('', 6)}", priority="LOW",
                     readiness="INCOMPLETE", birth_date="19520202", start="20300202100000")
    a[tags.ISSUER_OF_PATIENT_ID], b[tags.ISSUER_OF_PATIENT_ID] = elem("LO", "ISSUER_A"), elem("LO", "ISSUER_B")
    a[tags.PATIENT_SEX], b[tags.PATIENT_SEX] = elem("CS", "F"), elem("CS", "M")
    return Pair(label, {"A": ups.create_ok(a), "B": ups.create_ok(b)}, {"A": a, "B": b})


@pytest.mark.parametrize(("keyword", "tag"), SINGLE_VALUE_KEYS, ids=[k for k, _ in SINGLE_VALUE_KEYS])
def test_single_value_by_keyword(ups: Ups, pair: Pair, keyword: str, tag: str) -> None:
    """Required (R/U) matching keys of Table CC.2.5-3 match by single value, and are returned."""
    value = pair.value("A", tag)
    results = expect.result_list(ups.search(q(pair.label, f"{keyword}={encode(value)}")))
    same([first(r, tags.SOP_INSTANCE_UID) for r in results], [pair.uids["A"]])
    returned = pn_text(results[0], tag) if tag == tags.PATIENT_NAME else first(results[0], tag)
    assert returned == value, f"matched attribute {keyword} missing from the result"


@pytest.mark.parametrize(("keyword", "tag"), SINGLE_VALUE_KEYS, ids=[k for k, _ in SINGLE_VALUE_KEYS])
def test_single_value_by_tag(ups: Ups, pair: Pair, keyword: str, tag: str) -> None:
    """The same keys given as 8-hex-digit tags (PS3.18 8.3.4.1), the Worklist Label included."""
    found = ups.search_uids(f"00741202={encode(pair.label)}&{tag}={encode(pair.value('B', tag))}")
    same(found, [pair.uids["B"]])


def test_procedure_step_state_and_in_progress_encodings(ups: Ups, make: Maker, label: str) -> None:
    """'IN PROGRESS' arrives as IN%20PROGRESS or IN+PROGRESS (§7 #30); both must match."""
    claimed, waiting = make(), make()
    ups.claim(claimed)
    same(ups.search_uids(q(label, "ProcedureStepState=IN%20PROGRESS")), [claimed])
    same(ups.search_uids(q(label, "ProcedureStepState=IN+PROGRESS")), [claimed])
    same(ups.search_uids(q(label, "ProcedureStepState=SCHEDULED")), [waiting])


# --- UID list, wildcard, range -----------------------------------------------------------------------
def test_uid_list(ups: Ups, make: Maker, label: str) -> None:
    """A comma-separated list of UIDs matches any of them (List of UID matching)."""
    first_uid, second_uid, _other = make(), make(), make()
    same(ups.search_uids(q(label, f"SOPInstanceUID={first_uid},{second_uid}")), [first_uid, second_uid])


def test_wildcards(ups: Ups, make: Maker, label: str) -> None:
    """``*`` matches any sequence, ``?`` exactly one character (LO, PN, CS)."""
    stem = token("", 8)
    a1 = make(procedure_step_label=f"{stem}-A1", patient_name=f"WILD^{stem}A", priority="HIGH")
    b1 = make(procedure_step_label=f"{stem}-B1", patient_name=f"WILD^{stem}B", priority="LOW")
    cc1 = make(procedure_step_label=f"{stem}-CC1", patient_name=f"TAME^{stem}C", priority="LOW")
    same(ups.search_uids(q(label, f"ProcedureStepLabel={encode(stem + '-?1')}")), [a1, b1])
    same(ups.search_uids(q(label, f"ProcedureStepLabel={encode(stem + '-C*')}")), [cc1])
    same(ups.search_uids(q(label, f"ProcedureStepLabel={encode('*1')}")), [a1, b1, cc1])
    same(ups.search_uids(q(label, "PatientName=WILD^*")), [a1, b1])
    same(ups.search_uids(q(label, "ScheduledProcedureStepPriority=HI*")), [a1])


def test_datetime_ranges(ups: Ups, make: Maker, label: str) -> None:
    """DT range matching ``a-b``, ``-b``, ``a-`` with inclusive bounds."""
    jan1 = make(start="20300101100000")
    jan2 = make(start="20300102100000")
    jan3 = make(start="20300103100000")
    key = "ScheduledProcedureStepStartDateTime"
    same(ups.search_uids(q(label, f"{key}=20300101000000-20300102235959")), [jan1, jan2])
    same(ups.search_uids(q(label, f"{key}=-20300101235959")), [jan1])
    same(ups.search_uids(q(label, f"{key}=20300102120000-")), [jan3])
    same(ups.search_uids(q(label, f"{key}=20300102100000-20300102100000")), [jan2])


def test_date_ranges(ups: Ups, make: Maker, label: str) -> None:
    """DA range matching on Patient's Birth Date (R key)."""
    old = make(birth_date="19500101")
    mid = make(birth_date="19600101")
    young = make(birth_date="19700101")
    same(ups.search_uids(q(label, "PatientBirthDate=19550101-19650101")), [mid])
    same(ups.search_uids(q(label, "PatientBirthDate=-19550101")), [old])
    same(ups.search_uids(q(label, "PatientBirthDate=19650101-")), [young])
    same(ups.search_uids(q(label, "PatientBirthDate=19500101-19600101")), [old, mid])


# --- Sequence matching -------------------------------------------------------------------------------
def test_sequence_matching(ups: Ups, make: Maker, label: str) -> None:
    """Item-level keys match if any item matches; keywords and tags, nested with '.'."""
    code_a, code_b = token("X", 12), token("X", 12)
    acc_a = token("A", 12)
    a = make(workitem_code=(code_a, "99AIWCONF", "Algorithm A"), accession=acc_a,
             extra={tags.SCHEDULED_STATION_NAME_SEQ: sq(code("NODE_1", "99AIWCONF", "Node 1"),
                                                        code("NODE_2", "99AIWCONF", "Node 2"))})
    b = make(workitem_code=(code_b, "99AIWCONF", "Algorithm B"))
    same(ups.search_uids(q(label, f"ScheduledWorkitemCodeSequence.CodeValue={code_a}")), [a])
    same(ups.search_uids(q(label, f"00404018.00080100={code_b}")), [b])
    same(ups.search_uids(q(label, f"ReferencedRequestSequence.AccessionNumber={acc_a}")), [a])
    same(ups.search_uids(q(label, f"0040A370.00080050={acc_a}")), [a])
    same(ups.search_uids(q(label, "ScheduledStationNameCodeSequence.CodeValue=NODE_2")), [a])
    same(ups.search_uids(q(label, f"ScheduledWorkitemCodeSequence.CodeValue={code_a}",
                           "ScheduledWorkitemCodeSequence.CodingSchemeDesignator=99AIWCONF")), [a])
    assert ups.search_uids(q(label, f"ScheduledWorkitemCodeSequence.CodeValue={code_a}",
                             "ScheduledWorkitemCodeSequence.CodingSchemeDesignator=DCM")) == []


def test_sequence_match_returns_the_sequence(ups: Ups, make: Maker, label: str) -> None:
    """The response carries the matched sequence with its item attributes."""
    algo = token("X", 12)
    uid = make(workitem_code=(algo, "99AIWCONF", "Algorithm"))
    results = expect.result_list(ups.search(q(label, f"ScheduledWorkitemCodeSequence.CodeValue={algo}")))
    same([first(r, tags.SOP_INSTANCE_UID) for r in results], [uid])
    assert algo in code_values(results[0], tags.SCHEDULED_WORKITEM_CODE_SEQ)


def test_performer_pull_query(ups: Ups, make: Maker, label: str) -> None:
    """The Task Performer's pull query of spec §5.3: SCHEDULED + READY + its algorithm code."""
    algo = token("X", 12)
    ready = make(workitem_code=(algo, "99AIWCONF", "Algorithm"))
    make(workitem_code=(algo, "99AIWCONF", "Algorithm"), readiness="INCOMPLETE")
    make()
    query = q(label, "ProcedureStepState=SCHEDULED", "InputReadinessState=READY",
              f"ScheduledWorkitemCodeSequence.CodeValue={algo}", "includefield=all")
    same(ups.search_uids(query), [ready])


# --- Universal matching and includefield ---------------------------------------------------------------
def test_universal_matching(ups: Ups, make: Maker, label: str) -> None:
    """An empty value or ``*`` alone matches everything (and asks for the attribute)."""
    named, unnamed = make(patient_name="UNIVERSAL^X"), make(patient_name=None)
    same(ups.search_uids(q(label, "PatientName=")), [named, unnamed])
    same(ups.search_uids(q(label, "ProcedureStepLabel=*")), [named, unnamed])


@pytest.mark.parametrize(
    "includefield",
    ["includefield=00400400", "includefield=CommentsOnTheScheduledProcedureStep",
     "includefield=00400400,00404011", "includefield=00400400&includefield=ExpectedCompletionDateTime",
     "includefield=all"],
    ids=["tag", "keyword", "comma-list", "repeated", "all"],
)
def test_includefield(ups: Ups, make: Maker, label: str, includefield: str) -> None:
    """Return key type 3 attributes are returned when asked for with includefield."""
    make(extra={tags.EXPECTED_COMPLETION_DATETIME: elem("DT", "20300101120000")})
    results = expect.result_list(ups.search(q(label, includefield)))
    assert len(results) == 1
    assert first(results[0], tags.COMMENTS_ON_SPS) == "Created by the aiw UPS-RS conformance suite"
    if "00404011" in includefield or "ExpectedCompletion" in includefield or "all" in includefield:
        assert first(results[0], tags.EXPECTED_COMPLETION_DATETIME) == "20300101120000"
    if includefield.endswith("all"):
        assert first(results[0], tags.MODIFICATION_DATETIME), "includefield=all must return (0040,4010)"


def test_results_carry_return_keys(ups: Ups, make: Maker, label: str) -> None:
    """Every result holds all Return Key type 1 and 2 attributes of Table CC.2.5-3 (§5.3)."""
    make()
    results = expect.result_list(ups.search(q(label)))
    assert len(results) == 1
    missing = [name for tag, name in tags.RETURN_KEYS_1_AND_2.items() if tag not in results[0]]
    assert not missing, f"return keys missing from the Search result: {missing}"
    for tag in (tags.SOP_CLASS_UID, tags.SOP_INSTANCE_UID, tags.PRIORITY, tags.PROCEDURE_STEP_LABEL,
                tags.WORKLIST_LABEL, tags.START_DATETIME, tags.INPUT_READINESS_STATE, tags.PROCEDURE_STEP_STATE):
        assert first(results[0], tag), f"type 1 return key ({tag[:4]},{tag[4:]}) has no value"


@pytest.mark.parametrize("state", ["IN PROGRESS", "COMPLETED", "CANCELED"])
def test_transaction_uid_never_in_results(ups: Ups, make: Maker, label: str, state: str) -> None:
    """Transaction UID is neither a return key nor returned by includefield=all (§2.3 rule 1)."""
    uid = make()
    tuid = ups.claim(uid)
    if state == "COMPLETED":
        ups.complete(uid, tuid)
    elif state == "CANCELED":
        ups.cancel(uid, tuid)
    for query in (q(label, "includefield=all"), q(label)):
        response = ups.search(query)
        results = expect.result_list(response)
        if not results and state != "IN PROGRESS":
            pytest.skip("server purged the final-state workitem (allowed without a deletion lock, spec §4.4)")
        assert [first(r, tags.SOP_INSTANCE_UID) for r in results] == [uid]
        assert not contains_tag(results, tags.TRANSACTION_UID), f"(0008,1195) returned by {query}"
        assert tuid not in response.text, "Search leaked the Transaction UID value"
    response = ups.search(q(label, "includefield=00081195"))
    if response.status_code != 400:  # refusing to return it is as good as ignoring the request
        assert not contains_tag(expect.result_list(response), tags.TRANSACTION_UID)
        assert tuid not in response.text


# --- Paging ------------------------------------------------------------------------------------------
def _remaining(response: httpx.Response) -> int | None:
    """N of the paging Warning, None when there is none."""
    for text in expect.warnings(response):
        match = expect.PAGING.fullmatch(text)
        if match:
            return int(match.group(1))
    return None


def test_limit_offset_paging(ups: Ups, make: Maker, label: str) -> None:
    """limit/offset pages: exact sizes, the 'There are N additional results' Warning, stable order."""
    created = [make() for _ in range(5)]
    pages: list[list[str]] = []
    for offset, size, remaining in ((0, 2, 3), (2, 2, 1), (4, 1, None)):
        response = ups.search(q(label, f"offset={offset}", "limit=2"))
        results = expect.result_list(response)
        assert len(results) == size, f"offset={offset}: {len(results)} results, expected {size}"
        assert _remaining(response) == remaining, f"offset={offset}: Warning {expect.warnings(response)}"
        pages.append([first(r, tags.SOP_INSTANCE_UID) for r in results])
    flat = [uid for page in pages for uid in page]
    assert len(set(flat)) == 5, f"pages overlap: {pages}"
    same(flat, created)
    again = [first(r, tags.SOP_INSTANCE_UID) for r in expect.result_list(ups.search(q(label, "offset=0", "limit=2")))]
    assert again == pages[0], "order must be stable for identical requests"


def test_offset_without_limit_and_past_the_end(ups: Ups, make: Maker, label: str) -> None:
    """offset alone skips results; an offset past the end gives no results (204 or 200 [])."""
    created = [make() for _ in range(3)]
    everything = ups.search_uids(q(label))
    same(everything, created)
    assert ups.search_uids(q(label, "offset=1")) == everything[1:]
    assert ups.search_uids(q(label, "offset=3")) == []


# --- No match, errors, fuzzy ----------------------------------------------------------------------------
def test_no_matches(ups: Ups, make: Maker, label: str) -> None:
    """No match: 204 with no body (2024c) or 200 with an empty array (2016e)."""
    make()
    response = ups.search(q(label, f"PatientID={token('NOBODY')}"))
    assert expect.result_list(response) == []


def test_unknown_attribute_is_400(ups: Ups, label: str) -> None:
    """A matching key that is no attribute at all is invalid query syntax → 400."""
    expect.status(ups.search(q(label, "NoSuchDicomAttributeKeyword=1")), 400)


def test_fuzzymatching(ups: Ups, make: Maker, label: str) -> None:
    """fuzzymatching=true still returns the literal matches; if unsupported, the exact Warning says so."""
    uid = make(patient_name="FUZZY^PATIENT")
    response = ups.search(q(label, "PatientName=FUZZY^PATIENT", "fuzzymatching=true"))
    same([first(r, tags.SOP_INSTANCE_UID) for r in expect.result_list(response)], [uid])
    expect.optional_warning(response, expect.FUZZY_UNSUPPORTED, about="fuzzymatching")


def test_search_scope_is_isolated(ups: Ups, make: Maker, label: str) -> None:
    """Sanity check of the isolation every other test relies on: a new label matches only its items."""
    uid = make()
    same(ups.search_uids(q(label)), [uid])
    assert ups.search_uids(q(token("WL-", 16))) == []
