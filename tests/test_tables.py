"""The UPS standard tables kept as data (upsrs/standard/*.txt) against the spec digest.

attributes.txt is Table CC.2.5-3 with its macros (spec sec. 3.5), transitions.txt is Table
CC.1.1-2 (spec sec. 2.2), statuses.txt maps DIMSE statuses to HTTP and the Warning texts of
Appendix A. The expected values below are transcribed from the spec digest, independently
of the data files, so a transcription error in either shows up as a difference.
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from pydicom import datadict

from upsrs import states
from upsrs import status as st
from upsrs.tables import AttributeRule, Usage, enumerations, read_rows, ups_attributes

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------------------------
# Table CC.2.5-3 (spec sec. 3.5): path of tags | N-CREATE | N-SET | Final | N-GET | Match | Return
# '*' = not compared (the spec describes the rule in words).
MAIN_TABLE = [
    ("00081195", "2/2", "*", "O", "NA", "-", "-"),  # Transaction UID
    ("00080005", "1C/1C", "1C/1C", "RC", "3/1", "-", "1C"),  # Specific Character Set
    ("00080016", "-/1", "NA", "R", "NA", "O", "1"),  # SOP Class UID
    ("00080018", "NA", "NA", "R", "NA", "U", "1"),  # SOP Instance UID
    ("00741200", "1/1", "3/1", "R", "3/1", "R", "1"),  # Scheduled Procedure Step Priority
    ("00404010", "-/1", "-/1", "R", "3/1", "O", "3"),  # Scheduled Procedure Step Modification DateTime
    ("00741204", "1/1", "3/1", "O", "3/1", "R", "1"),  # Procedure Step Label
    ("00741202", "2/1", "3/1", "O", "3/1", "R", "1"),  # Worklist Label
    ("00741210", "2/2", "3/2", "O", "3/2", "-", "2"),  # Scheduled Processing Parameters Sequence
    ("00404025", "2/2", "3/2", "O", "3/2", "R", "2"),  # Scheduled Station Name Code Sequence
    ("00404026", "2/2", "3/2", "O", "3/2", "R", "2"),  # Scheduled Station Class Code Sequence
    ("00404027", "2/2", "3/2", "O", "3/2", "R", "2"),  # Scheduled Station Geographic Location Code Sequence
    ("00404034", "2C/2C", "3/2", "O", "3/2", "R", "2"),  # Scheduled Human Performers Sequence
    ("00404034.00404009", "1/1", "1/1", "O", "-/1", "R", "1"),  # Human Performer Code Sequence
    ("00404034.00404037", "1/1", "1/1", "O", "-/1", "O", "3"),  # Human Performer's Name
    ("00404034.00404036", "1/1", "1/1", "O", "-/1", "O", "3"),  # Human Performer's Organization
    ("00404005", "1/1", "3/1", "R", "3/1", "R", "1"),  # Scheduled Procedure Step Start DateTime
    ("00404011", "3/1", "3/1", "O", "3/1", "R", "3"),  # Expected Completion DateTime
    ("00404008", "3/3", "3/3", "O", "3/3", "O", "3"),  # Scheduled Procedure Step Expiration DateTime
    ("00404018", "2/2", "3/1", "O", "3/1", "R", "2"),  # Scheduled Workitem Code Sequence
    ("00400400", "2/2", "3/1", "O", "3/1", "O", "3"),  # Comments on the Scheduled Procedure Step
    ("00404041", "1/1", "3/1", "R", "3/1", "R", "1"),  # Input Readiness State
    ("00404021", "2/2", "3/2", "O", "3/2", "O", "2"),  # Input Information Sequence
    ("0020000D", "1C/2", "3/2", "O", "3/2", "O", "2"),  # Study Instance UID
    ("00404070", "3/3", "3/3", "O", "3/3", "O", "3"),  # Output Destination Sequence
    ("00100010", "2/2", "NA", "O", "3/2", "R", "2"),  # Patient's Name
    ("00100020", "1C/2", "NA", "O", "3/2", "R", "2"),  # Patient ID
    ("00101002", "2/2", "3/3", "O", "3/2", "O", "2"),  # Other Patient IDs Sequence
    ("00101002.00100020", "1/1", "1/1", "O", "-/1", "O", "1"),  # Patient ID
    ("00101002.00100022", "3/3", "3/3", "O", "3/3", "O", "3"),  # Type of Patient ID
    ("00100030", "2/2", "NA", "O", "3/2", "R", "2"),  # Patient's Birth Date
    ("00100040", "2/2", "NA", "O", "3/2", "R", "2"),  # Patient's Sex
    ("00101100", "3/3", "3/3", "O", "3/3", "-", "3"),  # Referenced Patient Photo Sequence
    ("00380010", "2/2", "NA", "O", "3/2", "R", "2"),  # Admission ID
    ("00380014", "2/2", "NA", "O", "3/2", "R", "2"),  # Issuer of Admission ID Sequence
    ("00081080", "2/2", "NA", "O", "3/2", "O", "2"),  # Admitting Diagnoses Description
    ("00081084", "2/2", "NA", "O", "3/2", "O", "2"),  # Admitting Diagnoses Code Sequence
    ("0040A370", "2/2", "NA", "O", "3/2", "R", "2"),  # Referenced Request Sequence
    ("0040A370.0020000D", "1/1", "NA", "O", "-/1", "O", "1"),  # Study Instance UID
    ("0040A370.00080050", "2/2", "NA", "O", "-/2", "R", "2"),  # Accession Number
    ("0040A370.00080051", "2/2", "NA", "O", "-/2", "R", "2"),  # Issuer of Accession Number Sequence
    ("0040A370.00402016", "3/1", "NA", "O", "-/1", "O", "1C"),  # Placer Order Number/Imaging Service Request
    ("0040A370.00400026", "2/2", "NA", "O", "-/2", "O", "2"),  # Order Placer Identifier Sequence
    ("0040A370.00402017", "3/1", "NA", "O", "-/1", "O", "1C"),  # Filler Order Number/Imaging Service Request
    ("0040A370.00400027", "2/2", "NA", "O", "-/2", "O", "2"),  # Order Filler Identifier Sequence
    ("0040A370.00401001", "2/2", "NA", "O", "-/2", "R", "2"),  # Requested Procedure ID
    ("0040A370.00321060", "2/2", "NA", "O", "-/2", "O", "2"),  # Requested Procedure Description
    ("0040A370.00321064", "2/2", "NA", "O", "-/2", "O", "2"),  # Requested Procedure Code Sequence
    ("0040A370.00401002", "3/3", "3/3", "O", "-/3", "O", "3"),  # Reason for the Requested Procedure
    ("0040A370.0040100A", "3/3", "3/3", "O", "-/3", "O", "3"),  # Reason for Requested Procedure Code Sequence
    ("0040A370.00401400", "3/3", "3/3", "O", "-/3", "O", "1C"),  # Requested Procedure Comments
    ("0040A370.00401008", "3/3", "3/3", "O", "-/3", "O", "3"),  # Confidentiality Code
    ("0040A370.00401010", "3/3", "3/3", "O", "-/3", "O", "3"),  # Names of Intended Recipients of Results
    ("0040A370.00402400", "3/3", "3/3", "O", "-/3", "O", "3"),  # Imaging Service Request Comments
    ("0040A370.00321032", "3/3", "3/3", "O", "-/3", "O", "3"),  # Requesting Physician
    ("0040A370.00321033", "3/1", "3/1", "O", "-/3", "R", "3"),  # Requesting Service
    ("0040A370.00321034", "3/3", "3/3", "O", "-/3", "O", "3"),  # Requesting Service Code Sequence
    ("0040A370.00402004", "3/3", "3/3", "O", "-/3", "O", "3"),  # Issue Date of Imaging Service Request
    ("0040A370.00402005", "3/3", "3/3", "O", "-/3", "O", "3"),  # Issue Time of Imaging Service Request
    ("0040A370.00080090", "3/3", "3/3", "O", "-/3", "O", "3"),  # Referring Physician's Name
    ("00741224", "1C/1C", "NA", "O", "3/2", "R", "3"),  # Replaced Procedure Step Sequence
    ("00102000", "3/2", "3/2", "O", "3/2", "O", "2C"),  # Medical Alerts
    ("001021C0", "3/2", "3/2", "O", "3/2", "O", "2C"),  # Pregnancy Status
    ("00380050", "3/2", "3/2", "O", "3/2", "O", "2C"),  # Special Needs
    ("00741000", "1/1", "NA", "R", "3/1", "R", "1"),  # Procedure Step State
    ("00741002", "2/2", "3/2", "X", "3/2", "-", "2"),  # Procedure Step Progress Information Sequence
    ("00741002.00741004", "NA", "3/1", "O", "-/1", "-", "-"),  # Procedure Step Progress
    ("00741002.00741006", "NA", "3/1", "O", "-/1", "-", "-"),  # Procedure Step Progress Description
    ("00741002.00741007", "NA", "3/3", "O", "-/3", "-", "-"),  # Procedure Step Progress Parameters Sequence
    ("00741002.00741007.00400441", "NA", "3/3", "O", "-/3", "-", "-"),  # Content Item Modifier Sequence
    ("00741002.00741008", "NA", "3/1", "O", "-/1", "-", "-"),  # Procedure Step Communications URI Sequence
    ("00741002.00741008.0074100A", "NA", "1/1", "O", "-/1", "-", "-"),  # Contact URI
    ("00741002.00741008.0074100C", "NA", "3/1", "O", "-/1", "-", "-"),  # Contact Display Name
    ("00741002.00404052", "NA", "3/1", "X", "-/1", "-", "-"),  # Procedure Step Cancellation DateTime
    ("00741002.00741238", "NA", "3/1", "O", "-/1", "-", "-"),  # Reason For Cancellation
    ("00741002.0074100E", "NA", "3/1", "X", "-/1", "-", "-"),  # Procedure Step Discontinuation Reason Code Seq.
    ("00741216", "2/2", "3/2", "P", "3/2", "-", "-"),  # Unified Procedure Step Performed Procedure Sequence
    ("00741216.00404035", "NA", "3/1", "RC", "-/1", "O", "1C"),  # Actual Human Performers Sequence
    ("00741216.00404035.00404009", "NA", "3/1", "RC", "-/1", "-", "-"),  # Human Performer Code Sequence
    ("00741216.00404035.00404037", "NA", "3/1", "RC", "-/1", "-", "-"),  # Human Performer's Name
    ("00741216.00404035.00404036", "NA", "3/1", "O", "-/1", "-", "-"),  # Human Performer's Organization
    ("00741216.00404028", "NA", "3/2", "P", "-/2", "O", "3"),  # Performed Station Name Code Sequence
    ("00741216.00404029", "NA", "3/2", "O", "-/2", "-", "-"),  # Performed Station Class Code Sequence
    ("00741216.00404030", "NA", "3/2", "O", "-/2", "-", "-"),  # Performed Station Geographic Location Code Seq.
    ("00741216.00404050", "NA", "3/1", "P", "-/1", "-", "-"),  # Performed Procedure Step Start DateTime
    ("00741216.00400254", "NA", "3/1", "O", "-/1", "-", "-"),  # Performed Procedure Step Description
    ("00741216.00400280", "NA", "3/1", "O", "-/1", "-", "-"),  # Comments on the Performed Procedure Step
    ("00741216.00404019", "NA", "3/1", "P", "-/1", "-", "-"),  # Performed Workitem Code Sequence
    ("00741216.00741212", "NA", "3/1", "O", "-/1", "-", "-"),  # Performed Processing Parameters Sequence
    ("00741216.00404051", "NA", "3/1", "P", "-/1", "O", "1C"),  # Performed Procedure Step End DateTime
    ("00741216.00404033", "NA", "2/2", "P", "-/2", "-", "-"),  # Output Information Sequence
]

# Macros (Tables CC.2.5-2a..2g, spec sec. 3.5), relative to the item they are included in.
CODE_SEQUENCE = [
    ("00080100", "1C/1C", "1C/1C", "O", "-/1C", "*", "1C"),  # Code Value
    ("00080102", "1C/1C", "1C/1C", "O", "-/1C", "*", "1C"),  # Coding Scheme Designator
    ("00080103", "1C/1C", "1C/1C", "O", "-/1C", "-", "1C"),  # Coding Scheme Version
    ("00080104", "1/1", "1/1", "O", "-/1", "-", "1"),  # Code Meaning
    ("00080119", "1C/1C", "1C/1C", "O", "-/1C", "*", "1C"),  # Long Code Value
    ("00080120", "1C/1C", "1C/1C", "O", "-/1C", "*", "1C"),  # URN Code Value
    ("00080105", "3/3", "3/3", "O", "-/3", "-", "3"),  # Mapping Resource
    ("00080118", "3/3", "3/3", "O", "-/3", "-", "3"),  # Mapping Resource UID
    ("00080106", "3/3", "3/3", "O", "-/3", "-", "3"),  # Context Group Version
    ("0008010B", "3/3", "3/3", "O", "-/3", "-", "3"),  # Context Group Extension Flag
    ("00080107", "3/3", "3/3", "O", "-/3", "-", "3"),  # Context Group Local Version
    ("0008010D", "3/3", "3/3", "O", "-/3", "-", "3"),  # Context Group Extension Creator UID
]
CONTENT_ITEM = [
    ("0040A040", "1/1", "1/1", "O", "-/1", "*", "1"),  # Value Type
    ("0040A043", "1/1", "1/1", "O", "-/1", "*", "1"),  # Concept Name Code Sequence
    ("0040A120", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # DateTime
    ("0040A121", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Date
    ("0040A122", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Time
    ("0040A123", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Person Name
    ("0040A124", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # UID
    ("0040A160", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Text Value
    ("0040A168", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Concept Code Sequence
    ("0040A30A", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Numeric Value
    ("004008EA", "1C/1C", "1/1", "O", "-/1", "*", "1C"),  # Measurement Units Code Sequence
]
REFERENCED_INSTANCES = [
    ("0040E020", "1/1", "1/1", "O", "-/1", "O", "1"),  # Type of Instances
    ("0020000D", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # Study Instance UID
    ("0020000E", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # Series Instance UID
    ("00081199", "1/1", "1/1", "O", "-/1", "O", "1"),  # Referenced SOP Sequence
    ("00081199.00081150", "1/1", "1/1", "O", "-/1", "O", "1"),  # Referenced SOP Class UID
    ("00081199.00081155", "1/1", "1/1", "O", "-/1", "O", "1"),  # Referenced SOP Instance UID
    ("00081199.0040E001", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # HL7 Instance Identifier
    ("00081199.00081160", "1C/1", "1C/1", "O", "-/2", "O", "1C"),  # Referenced Frame Number
    ("00081199.0062000B", "1C/1", "1C/1", "O", "-/2", "O", "1C"),  # Referenced Segment Number
    ("0040E021", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # DICOM Retrieval Sequence
    ("0040E021.00080054", "1/1", "1/1", "O", "-/1", "O", "1"),  # Retrieve AE Title
    ("0040E022", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # DICOM Media Retrieval Sequence
    ("0040E022.00880130", "2/2", "2/2", "O", "-/2", "O", "2"),  # Storage Media File-Set ID
    ("0040E022.00880140", "1/1", "1/1", "O", "-/1", "O", "1"),  # Storage Media File-Set UID
    ("0040E023", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # WADO Retrieval Sequence
    ("0040E023.0040E010", "1/1", "1/1", "O", "-/1", "O", "1"),  # Retrieve URI
    ("0040E024", "1C/*", "1C/1", "O", "-/1", "O", "1C"),  # XDS Retrieval Sequence (digest prints "1C")
    ("0040E024.0040E030", "1/1", "1/1", "O", "-/1", "O", "1"),  # Repository Unique ID
    ("0040E024.0040E031", "3/2", "3/2", "O", "3/2", "O", "2"),  # Home Community ID
    ("0040E025", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # WADO-RS Retrieval Sequence
    ("0040E025.00081190", "1/1", "1/1", "O", "-/1", "O", "1"),  # Retrieve URL
]
HL7V2_DESIGNATOR = [
    ("00400031", "1C/1", "NA", "O", "-/1", "*", "1C"),  # Local Namespace Entity ID
    ("00400032", "1C/1", "NA", "O", "-/1", "*", "1C"),  # Universal Entity ID
    ("00400033", "1C/1", "NA", "O", "-/1", "*", "1C"),  # Universal Entity ID Type
]
ISSUER_OF_PATIENT_ID = [
    ("00100021", "2/2", "NA", "O", "3/2", "R", "2"),  # Issuer of Patient ID
    ("00100024", "2/2", "NA", "O", "3/2", "O", "2"),  # Issuer of Patient ID Qualifiers Sequence
    ("00100024.00400032", "2/2", "NA", "O", "3/2", "O", "2"),  # Universal Entity ID
    ("00100024.00400033", "1C/1", "NA", "O", "3/2", "O", "1C"),  # Universal Entity ID Type
    ("00100024.00400035", "2/2", "NA", "O", "3/2", "O", "2"),  # Identifier Type Code
    ("00100024.00400036", "2/2", "NA", "O", "3/2", "O", "2"),  # Assigning Facility Sequence
    ("00100024.00400039", "2/2", "NA", "O", "3/2", "O", "2"),  # Assigning Jurisdiction Code Sequence
    ("00100024.0040003A", "2/2", "NA", "O", "3/2", "O", "2"),  # Assigning Agency or Department Code Sequence
]
SOP_INSTANCE_REFERENCE = [
    ("00081150", "1/1", "1/1", "O", "-/1", "*", "1"),  # Referenced SOP Class UID
    ("00081155", "1/1", "1/1", "O", "-/1", "*", "1"),  # Referenced SOP Instance UID
]
STORAGE = [
    ("00081150", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # Referenced SOP Class UID
    ("00404071", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # DICOM Storage Sequence
    ("00404071.21000140", "1/1", "1/1", "O", "-/1", "*", "1"),  # Destination AE (not the misprinted (0040,4071))
    ("00404072", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # STOW-RS Storage Sequence
    ("00404072.00404073", "1/1", "1/1", "O", "-/1", "*", "1"),  # Storage URL
    ("00404074", "1C/1", "1C/1", "O", "-/1", "O", "1C"),  # XDS Storage Sequence
    ("00404074.0040E030", "1/1", "1/1", "O", "-/1", "*", "1"),  # Repository Unique ID
    ("00404074.0040E031", "3/2", "3/2", "O", "3/2", "*", "2"),  # Home Community ID
]

# Where each macro is included (path of the sequence whose items hold it; "" = top level).
MACRO_SITES: list[tuple[str, list[tuple[str, ...]]]] = [
    *[(p, CODE_SEQUENCE) for p in (
        "00741210.0040A043", "00741210.0040A168", "00741210.004008EA", "00404025", "00404026", "00404027",
        "00404034.00404009", "00404018", "00081084", "0040A370.00321064", "0040A370.0040100A",
        "0040A370.00321034", "00100024.00400039", "00100024.0040003A", "00741002.0074100E",
        "00741002.00741007.0040A043", "00741002.00741007.00400441.0040A043",
        "00741216.00404035.00404009", "00741216.00404028", "00741216.00404029", "00741216.00404030",
        "00741216.00404019", "00741216.00741212.0040A043")],
    *[(p, CONTENT_ITEM) for p in ("00741210", "00741002.00741007", "00741002.00741007.00400441", "00741216.00741212")],
    *[(p, REFERENCED_INSTANCES) for p in ("00404021", "00101100", "00741216.00404033")],
    *[(p, HL7V2_DESIGNATOR) for p in ("00380014", "0040A370.00080051", "0040A370.00400026", "0040A370.00400027",
                                      "00100024.00400036")],
    ("", ISSUER_OF_PATIENT_ID),
    ("00741224", SOP_INSTANCE_REFERENCE),
    ("00404070", STORAGE),
]


def rule_at(path: str) -> AttributeRule:
    rules = ups_attributes()
    rule = None
    for part in path.split("."):
        assert part and int(part, 16) in rules, f"{path}: {part} is not in the table at that place"
        rule = rules[int(part, 16)]
        rules = rule.children
    assert rule is not None
    return rule


def usage_text(u: Usage) -> str:
    return "NA" if u.not_allowed else f"{u.scu}/{u.scp}"


def same_usage(got: str, expected: str) -> bool:
    if expected == "*":
        return True
    if expected.endswith("/*"):
        return got.split("/")[0] == expected.split("/")[0]
    return got == expected


def compare(path: str, expected: tuple[str, ...]) -> list[str]:
    rule = rule_at(path)
    got = (usage_text(rule.create), usage_text(rule.set), rule.final, usage_text(rule.get), rule.match, rule.ret)
    diffs = []
    for col, g, e in zip(("N-CREATE", "N-SET", "Final", "N-GET", "Match", "Return"), got, expected):
        if col in ("N-CREATE", "N-SET", "N-GET"):
            ok = same_usage(g, e)
        else:
            ok = e == "*" or g == e
        if not ok:
            diffs.append(f"{path} {rule.name}: {col} is {g!r}, the spec says {e!r}")
    return diffs


# --------------------------------------------------------------------------------------------
def test_attribute_table_loads_with_every_top_level_attribute_of_the_spec() -> None:
    table = ups_attributes()
    top = {int(p, 16) for p, *_ in MAIN_TABLE if "." not in p} | {int(p, 16) for p, *_ in ISSUER_OF_PATIENT_ID if "." not in p}
    assert top <= set(table), sorted(f"{t:08X}" for t in top - set(table))
    # nothing at top level the spec does not list
    assert set(table) <= top, sorted(f"{t:08X}" for t in set(table) - top)


def test_main_table_columns_agree_with_the_spec() -> None:
    diffs = [d for path, *cols in MAIN_TABLE for d in compare(path, tuple(cols))]
    assert not diffs, "\n".join(diffs)


@pytest.mark.parametrize("site,macro", MACRO_SITES, ids=[s or "top" for s, _ in MACRO_SITES])
def test_macro_rows_agree_with_the_spec_at_every_include_site(site: str, macro: list[tuple[str, ...]]) -> None:
    diffs = [d for rel, *cols in macro for d in compare(f"{site}.{rel}" if site else rel, tuple(cols))]
    assert not diffs, "\n".join(diffs)
    if site:  # the macro is all the item holds, except rows the table adds beside it
        extra = set(rule_at(site).children) - {int(r.split(".")[0], 16) for r, *_ in macro}
        allowed_extra = {"00741002.00741007": {0x00400441}}.get(site, set())
        assert extra <= allowed_extra, (site, sorted(f"{t:08X}" for t in extra))


def test_spot_checks_from_the_spec() -> None:
    readiness = rule_at("00404041")
    assert (readiness.create.scu, readiness.create.scp) == ("1", "1")  # Input Readiness State 1/1
    assert readiness.name == "Input Readiness State" and readiness.vrs == ("CS",)
    assert rule_at("00100010").set.not_allowed  # Patient's Name: N-SET not allowed
    assert not rule_at("00100010").create.not_allowed
    assert rule_at("00741000").set.not_allowed  # Procedure Step State only via Change State
    assert rule_at("00080018").create.not_allowed and rule_at("00080018").match == "U"
    assert rule_at("00081195").get.not_allowed and rule_at("00081195").match == "-"  # TUID never returned/matched
    assert (rule_at("00741202").create.scu, rule_at("00741202").create.scp) == ("2", "1")  # Worklist Label 2/1


def test_output_information_sequence_is_inside_the_performed_procedure_item_with_the_macro() -> None:
    table = ups_attributes()
    assert 0x00404033 not in table  # not top level
    performed = table[0x00741216]
    assert 0x00404033 in performed.children
    # the macro's rows are inside Output Information Sequence, not beside it (spec sec. 7 row 33)
    assert 0x0040E020 not in performed.children and 0x00081199 not in performed.children
    output = performed.children[0x00404033]
    assert output.is_sequence and output.final == "P" and (output.set.scu, output.set.scp) == ("2", "2")
    assert {0x0040E020, 0x0020000D, 0x0020000E, 0x00081199, 0x0040E021, 0x0040E025} <= set(output.children)
    assert set(output.children[0x00081199].children) >= {0x00081150, 0x00081155}
    assert 0x00081190 in output.children[0x0040E025].children  # Retrieve URL


def test_destination_ae_is_2100_0140_inside_the_dicom_storage_sequence() -> None:
    storage = ups_attributes()[0x00404070].children
    dicom_storage = storage[0x00404071]
    assert dicom_storage.name == "DICOM Storage Sequence" and dicom_storage.is_sequence
    assert set(dicom_storage.children) == {0x21000140}
    dest = dicom_storage.children[0x21000140]
    assert dest.name == "Destination AE" and dest.vrs == ("AE",)
    assert (dest.create.scu, dest.create.scp) == ("1", "1")


def _all_rows(rules: dict[int, AttributeRule], path: str = ""):  # type: ignore[no-untyped-def]
    for tag, rule in rules.items():
        here = f"{path}.{tag:08X}" if path else f"{tag:08X}"
        yield here, rule
        yield from _all_rows(rule.children, here)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9']", "", name.lower().replace("’", "'"))


def test_every_name_in_attributes_txt_is_the_data_dictionary_name_of_its_tag() -> None:
    """Catches a tag typed wrong: its dictionary name would not be the name written beside it
    (case, spaces and slashes are not significant)."""
    text = (REPO / "upsrs" / "standard" / "attributes.txt").read_text("utf-8")
    rows = re.findall(r"^>*\(([0-9A-F]{4}),([0-9A-F]{4})\)\s+([^|]+)\|", text, re.MULTILINE)
    assert len(rows) > 150
    wrong = []
    for g, e, name in rows:
        tag = int(g + e, 16)
        assert datadict.dictionary_has_tag(tag), f"({g},{e}) {name} is not in the data dictionary"
        if _norm(name) != _norm(datadict.dictionary_description(tag)):
            wrong.append(f"({g},{e}) {name.strip()!r} is {datadict.dictionary_description(tag)!r}")
    assert not wrong, "\n".join(wrong)


def test_every_vr_of_the_loaded_table_is_the_dictionary_vr() -> None:
    rows = list(_all_rows(ups_attributes()))
    assert len(rows) > 300
    for path, rule in rows:
        assert rule.vrs == tuple(datadict.dictionary_VR(rule.tag).split(" or ")), path
        assert rule.is_sequence == (rule.vrs == ("SQ",)), path
        assert bool(rule.children) == rule.is_sequence, f"{path}: a sequence without item rules or vice versa"


def test_conditions_name_siblings_that_exist() -> None:
    for path, rule in _all_rows(ups_attributes()):
        if not rule.condition:
            continue
        kind, _, arg = rule.condition.partition("=")
        assert kind in ("oneof", "when", "with"), path
        assert rule.create.scu == "1C" or rule.set.scu == "1C", f"{path}: a condition on a non-conditional type"
        if kind in ("when", "with"):
            # '^' = an attribute of the enclosing item (e.g. Type of Instances for HL7 Instance Identifier)
            up = len(arg) - len(arg.lstrip("^"))
            tag = int(arg.lstrip("^").split(":")[0].strip("()").replace(",", ""), 16)
            parts = path.split(".")[: -1 - up]
            parent = rule_at(".".join(parts)).children if parts else ups_attributes()
            assert tag in parent, f"{path}: condition names {arg}, which is not there"
            if kind == "when":
                value = arg.split(":", 1)[1]
                allowed = enumerations().get(tag)
                assert allowed is None or value in allowed, f"{path}: {value} is not an enumerated value of {tag:08X}"


def test_enumerations_match_spec_section_3_4() -> None:
    enums = enumerations()
    assert enums[0x00741000] == {"SCHEDULED", "IN PROGRESS", "CANCELED", "COMPLETED"}
    assert enums[0x00741200] == {"HIGH", "MEDIUM", "LOW"}
    assert enums[0x00404041] == {"INCOMPLETE", "UNAVAILABLE", "READY"}
    assert enums[0x0040A040] == {"DATETIME", "DATE", "TIME", "PNAME", "UIDREF", "TEXT", "CODE", "NUMERIC"}
    assert enums[0x00741230] == {"TRUE", "FALSE"}
    assert enums[0x00741242] == {"RESTARTED", "GOING DOWN"}
    for tag in enums:
        assert datadict.dictionary_VR(tag) == "CS" or tag == 0x00741230, f"{tag:08X}"


# --------------------------------------------------------------------------------------------
# The transition table: every (request, state, Transaction UID) the engine can ask.
REQUESTS = [*states.STATES, "update", "cancelrequest"]
STORED_TUID = {states.SCHEDULED: "", states.IN_PROGRESS: "1.2.3.4", states.COMPLETED: "1.2.3.4", states.CANCELED: "1.2.3.4"}
GIVEN = [None, "", "1.2.3.4", "9.8.7"]


def _transaction(request: str) -> str:
    return request if request in ("update", "cancelrequest") else "change-state"


@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize("state", states.STATES)
def test_transition_table_has_a_cell_for_every_question_the_engine_can_ask(request_: str, state: str) -> None:
    givens = [None] if request_ == "cancelrequest" else GIVEN
    for given in givens:
        d = states.decide(request_, state, given, STORED_TUID[state])
        assert d.path or d.update or d.event or d.status != "0000", (request_, state, given, d)
        # whatever it answers, statuses.txt knows how to say it
        found = st.lookup(_transaction(request_), d.status)
        assert 200 <= found.http < 500


def test_unreachable_cells_are_exactly_the_incorrect_tuid_on_scheduled() -> None:
    rows = read_rows("transitions.txt")
    dashes = {(r[0], s) for r in rows for s, cell in zip(states.STATES, r[1:]) if cell == "-"}
    assert dashes == {(f"{req} tuid=incorrect", states.SCHEDULED) for req in states.STATES + ("update",)}
    # and indeed the engine never classifies a TUID as incorrect on a SCHEDULED workitem
    for given in ("1.2.3", "9.9.9", "2.25.1"):
        assert states.classify_tuid(given, "", states.SCHEDULED) == "correct"
        assert states.classify_tuid(given, "4.5.6", states.SCHEDULED) == "correct"


# --------------------------------------------------------------------------------------------
# Statuses: every status the engine can produce has a row.
TRANSACTIONS = ("create", "retrieve", "update", "change-state", "cancelrequest", "search")


def _literal(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _literals(node: ast.AST | None) -> list[str]:
    """The string constants an argument can be: a literal, or either branch of ``a if c else b``."""
    if isinstance(node, ast.IfExp):
        return _literals(node.body) + _literals(node.orelse)
    lit = _literal(node)
    return [lit] if lit is not None else []


def _engine_statuses() -> set[tuple[str, str]]:
    """(transaction, status) pairs written in the Task Manager's and the engines' source."""
    found: set[tuple[str, str]] = set()
    problem_statuses: set[str] = {"0106"}  # Problem's default
    sources = sorted((REPO / "ups_server").glob("*.py")) + [REPO / "upsrs" / n for n in (
        "validation.py", "dicomjson.py", "matching.py")]
    assert len(sources) > 5
    for path in sources:
        tree = ast.parse(path.read_text("utf-8"))
        # final-state problems (C304) only end a Change State: UpsFailure("change-state", "C304")
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "final_state_problems"]:
            fn.body = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            args = list(node.args)
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("UpsFailure", "Reply"):
                txn = _literal(args[0]) if args else _literal(kw.get("transaction"))
                status_node = args[1] if len(args) > 1 else kw.get("status")
                statuses = _literals(status_node)
                if name == "Reply" and status_node is None:
                    statuses = ["0000"]
                for t in ([txn] if txn else TRANSACTIONS):
                    for status in statuses:
                        found.add((t, status))
            elif name == "Problem":
                status = _literal(args[2]) if len(args) > 2 else _literal(kw.get("status"))
                if status:
                    problem_statuses.add(status)
    # a dataset problem can end any transaction that reads a dataset or a query
    for t in TRANSACTIONS:
        for s in problem_statuses:
            found.add((t, s))
    return found


def test_every_status_the_engine_can_produce_has_a_row_in_statuses_txt() -> None:
    produced = _engine_statuses()
    for request in REQUESTS:
        for state in states.STATES:
            for given in GIVEN:
                produced.add((_transaction(request), states.decide(request, state, given, STORED_TUID[state]).status))
    produced |= {("search", "paging"), ("search", "fuzzy"), ("search", "0110")}
    assert len(produced) > 30
    missing = []
    for txn, status in sorted(produced):
        try:
            st.lookup(txn, status)
        except LookupError:
            missing.append(f"{txn} {status}")
    assert not missing, missing


# Appendix A (2024c texts; 2026a for Request Cancellation) — exact.
APPENDIX_A = {
    ("create", "B300"): "The Workitem was created with modifications.",
    ("update", "B305"): "The Workitem was updated with modifications.",
    ("update", "0001"): "Requested optional Attributes are not supported.",
    ("change-state", "B304"): "The UPS is already in the requested state of CANCELED.",
    ("change-state", "B306"): "The UPS is already in the requested state of COMPLETED.",
    ("change-state", "C301:missing"): "The Transaction UID is missing.",
    ("change-state", "C301:incorrect"): "The Transaction UID is incorrect.",
    **{("change-state", c): "The submitted request is inconsistent with the state of the UPS Instance."
       for c in ("C300", "C302", "C303", "C304", "C310")},
    ("cancelrequest", "B304"): "The UPS is already in the requested state of CANCELED.",
    ("cancelrequest", "C311"): "The UPS is already COMPLETED.",
    ("cancelrequest", "C312"): "The performer cannot be contacted.",
    ("cancelrequest", "C313"): "Performer chooses not to cancel.",
    ("subscribe", "B301"): "Deletion Lock not granted.",
    ("subscribe", "filter-unsupported"): "Filtered Worklist Subscriptions are not supported.",
    ("search", "paging"): "There are {remaining} additional results that can be requested",
    ("search", "fuzzy"): "The fuzzymatching parameter is not supported. Only literal matching has been performed.",
    ("search", "emptyvalue"): "The emptyvaluematching parameter is not supported. Empty Value Matching has not been performed.",
    ("search", "multiplevalue"): "The multiplevaluematching parameter is not supported. Multiple Value Matching has not been performed.",
}
# Update failures: Appendix A gives 2024c and 2016e texts; either is the standard's.
UPDATE_FAILURE_TEXTS = {
    "The target URI did not reference a claimed Workitem.",
    "The submitted request is inconsistent with the current state of the Workitem.",
    "The Transaction UID is missing.",
    "The Transaction UID is incorrect.",
    "The submitted request is inconsistent with the current state of the UPS Instance.",
}
# Rows the standard gives no Warning text for: the server's own words are fine there.
OWN_TEXTS = {("create", "0111"), ("create", "C309"), ("*", "gone"), ("*", "busy")}
# Texts the spec quotes outside Appendix A (sec. 1.3.8: dcm4chee's 404 for an unknown subscription).
SPEC_TEXTS = {"The target Subscription was not found."}


@pytest.mark.parametrize("key,text", sorted(APPENDIX_A.items()), ids=[f"{t}-{s}" for t, s in sorted(APPENDIX_A)])
def test_warning_texts_are_exactly_appendix_a(key: tuple[str, str], text: str) -> None:
    assert st.lookup(*key).warning == text


def test_update_failure_texts_are_appendix_a_texts() -> None:
    texts = {s: st.lookup("update", s).warning for s in ("C300", "C301:missing", "C301:incorrect", "C310")}
    for s, t in texts.items():
        assert t in UPDATE_FAILURE_TEXTS, (s, t)
    assert "missing" in texts["C301:missing"] and "incorrect" in texts["C301:incorrect"]


def test_no_row_invents_a_text_where_the_standard_has_one() -> None:
    rows = read_rows("statuses.txt")
    assert len(rows) > 40
    for row in rows:
        txn, status, text = row[0], row[1], row[3] if len(row) > 3 else ""
        if not text or (txn, status) in OWN_TEXTS:
            continue
        if txn in ("unsubscribe", "suspend", "subscribe") and text in SPEC_TEXTS:
            continue
        if txn == "update" and status in ("C300", "C301:missing", "C301:incorrect", "C310"):
            continue
        assert (txn, status) in APPENDIX_A, f"statuses.txt {txn} {status}: {text!r} is not a text of Appendix A"
        assert text == APPENDIX_A[(txn, status)]


def test_warning_header_form() -> None:
    assert st.warning_header("http://h/dicom-web", "x y.") == "299 http://h/dicom-web: x y."


HTTP = {  # spec sec. 1.3 and 2.4
    ("create", "0000"): {201}, ("create", "B300"): {201}, ("create", "0111"): {409}, ("create", "C309"): {400},
    ("retrieve", "0000"): {200}, ("retrieve", "C307"): {404}, ("retrieve", "gone"): {410},
    ("update", "0000"): {200}, ("update", "B305"): {200}, ("update", "0001"): {200},
    ("update", "C300"): {400, 409}, ("update", "C301:missing"): {400, 409}, ("update", "C301:incorrect"): {400, 409},
    ("update", "C310"): {400, 409}, ("update", "C307"): {404},
    ("change-state", "0000"): {200}, ("change-state", "B304"): {200}, ("change-state", "B306"): {200},
    **{("change-state", c): {400, 409} for c in ("C300", "C301:missing", "C301:incorrect", "C302", "C303", "C304", "C310")},
    ("change-state", "C307"): {404},
    ("cancelrequest", "0000"): {202}, ("cancelrequest", "B304"): {202}, ("cancelrequest", "C311"): {409},
    ("cancelrequest", "C312"): {409}, ("cancelrequest", "C313"): {409}, ("cancelrequest", "C307"): {404},
    ("search", "0000"): {200}, ("search", "paging"): {200}, ("search", "fuzzy"): {200},
    **{(t, s): {400} for t, s in itertools.product(TRANSACTIONS, ("0105", "0106", "0120", "0121", "0110"))},
    **{(t, "media"): {415} for t in TRANSACTIONS}, **{(t, "not-acceptable"): {406} for t in TRANSACTIONS},
    **{(t, "too-large"): {413} for t in TRANSACTIONS},
}


@pytest.mark.parametrize("key,codes", sorted(HTTP.items()), ids=[f"{t}-{s}" for t, s in sorted(HTTP)])
def test_http_status_of_each_dimse_status(key: tuple[str, str], codes: set[int]) -> None:
    assert st.lookup(*key).http in codes
