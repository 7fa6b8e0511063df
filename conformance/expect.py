"""What a client sees: status codes, Warning headers and bodies, with readable failures.

Warning texts are the published ones (spec Appendix A). Where editions word a condition
differently, the constant is a set holding every sanctioned wording; where they agree it
is a single string and the tests compare it exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import httpx

from .dicomjson import Dataset

# --- Warning texts (prefix on the wire: "299 <service>: ") ---------------------------------
CREATED_WITH_MODIFICATIONS = frozenset({
    "The Workitem was created with modifications.",  # 2024c
    "The UPS was created with modifications.",  # 2016e
})
TUID_MISSING = "The Transaction UID is missing."
TUID_INCORRECT = "The Transaction UID is incorrect."
INCONSISTENT_STATE = frozenset({
    "The submitted request is inconsistent with the state of the UPS Instance.",  # 2024c 11.7.3.2
    "The submitted request is inconsistent with the current state of the UPS Instance.",  # 2016e
})
ALREADY_CANCELED = "The UPS is already in the requested state of CANCELED."
ALREADY_COMPLETED = "The UPS is already in the requested state of COMPLETED."
# Update failures (C300/C301/C310): 2024c 11.6.3.2 has two texts, 2016e three others.
UPDATE_REFUSED = frozenset({
    "The target URI did not reference a claimed Workitem.",
    "The submitted request is inconsistent with the current state of the Workitem.",
    TUID_MISSING,
    TUID_INCORRECT,
    *INCONSISTENT_STATE,
})
CANCEL_ALREADY_COMPLETED = "The UPS is already COMPLETED."  # 2026a, C311
PERFORMER_NOT_CONTACTED = "The performer cannot be contacted."  # C312
PERFORMER_REFUSES = "Performer chooses not to cancel."  # C313
FUZZY_UNSUPPORTED = (
    "The fuzzymatching parameter is not supported. Only literal matching has been performed."
)
PAGING = re.compile(r"There are (\d+) additional results that can be requested")

# Lock/state conflicts: 2024c says 400, 2016e and dcm4chee say 409 (spec §7 row 4).
CONFLICT = (400, 409)

_WARNING = re.compile(r"^\s*(\d{3})\s+(\S+)\s+(.*?)\s*$", re.S)
_SPLIT = re.compile(r",\s*(?=\d{3}\s)")


def warnings(response: httpx.Response) -> list[str]:
    """The texts of all 299 Warning headers, without code and agent.

    Syntax per PS3.18 / RFC 7234: ``299 <service>: <text>``. The agent token is taken as
    whatever precedes the first blank (it may contain ``:`` as in ``host:8080``); quotes
    around the text are tolerated. Several warnings may share one header line.
    """
    texts: list[str] = []
    for raw in response.headers.get_list("warning"):
        for part in _SPLIT.split(raw):
            match = _WARNING.match(part)
            if match and match.group(1) == "299":
                texts.append(match.group(3).strip().strip('"'))
    return texts


def describe(response: httpx.Response) -> str:
    """One-paragraph summary of a response for assertion messages."""
    body = response.text if response.content else ""
    if len(body) > 600:
        body = body[:600] + "…"
    return (
        f"{response.request.method} {response.request.url} -> {response.status_code}; "
        f"Warning={response.headers.get_list('warning')}; body={body!r}"
    )


def status(response: httpx.Response, *expected: int) -> None:
    """Assert the status code is one of ``expected``."""
    assert response.status_code in expected, f"expected status {expected}: {describe(response)}"


def no_server_error(response: httpx.Response) -> None:
    """Assert the server did not fail internally (a 5xx is always a bug, whatever the input)."""
    assert response.status_code < 500, f"server error on bad input: {describe(response)}"


def warning(response: httpx.Response, expected: str | Iterable[str]) -> str:
    """Assert a 299 Warning with exactly one of the ``expected`` texts is present; return it."""
    allowed = {expected} if isinstance(expected, str) else set(expected)
    found = warnings(response)
    hits = [text for text in found if text in allowed]
    assert hits, f"expected a Warning with one of {sorted(allowed)}; got {found}: {describe(response)}"
    return hits[0]


def no_warning(response: httpx.Response, unexpected: str | Iterable[str]) -> None:
    """Assert none of the ``unexpected`` Warning texts is present."""
    banned = {unexpected} if isinstance(unexpected, str) else set(unexpected)
    found = [text for text in warnings(response) if text in banned]
    assert not found, f"unexpected Warning {found}: {describe(response)}"


def optional_warning(response: httpx.Response, allowed: str | Iterable[str], about: str) -> None:
    """When a Warning mentioning ``about`` is present, it must be one of the ``allowed`` texts."""
    allowed_set = {allowed} if isinstance(allowed, str) else set(allowed)
    for text in warnings(response):
        if about.lower() in text.lower():
            assert text in allowed_set, f"Warning text {text!r} is not one of {sorted(allowed_set)}"


def refused(response: httpx.Response, codes: Iterable[int], texts: str | Iterable[str]) -> None:
    """Assert a failure status from ``codes`` carrying one of the sanctioned Warning ``texts``."""
    status(response, *codes)
    warning(response, texts)


def json_body(response: httpx.Response) -> Any:
    """Parse a JSON body, failing with the response summary when it is not JSON."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AssertionError(f"body is not JSON ({exc}): {describe(response)}") from None


def dicom_json_media_type(response: httpx.Response) -> None:
    """Assert the payload is labelled ``application/dicom+json`` (PS3.18 Table 11.1.3-1)."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    assert media == "application/dicom+json", f"Content-Type {media!r}: {describe(response)}"


def single_dataset(response: httpx.Response) -> Dataset:
    """The workitem of a Retrieve response: a JSON array of one object or a bare object (§7 #14)."""
    body = json_body(response)
    if isinstance(body, list):
        assert len(body) == 1, f"Retrieve must return exactly one dataset, got {len(body)}"
        body = body[0]
    assert isinstance(body, dict), f"Retrieve body is not a DICOM JSON object: {describe(response)}"
    return body


def result_list(response: httpx.Response) -> list[Dataset]:
    """Search results: 200 with a JSON array, or no matches (204, or 200 with ``[]``; §7 #21)."""
    status(response, 200, 204, 206)
    if response.status_code == 204:
        assert not response.content, f"204 must have no body: {describe(response)}"
        return []
    dicom_json_media_type(response)
    body = json_body(response)
    assert isinstance(body, list), f"Search results must be a JSON array: {describe(response)}"
    assert all(isinstance(item, dict) for item in body), "every result must be a JSON object"
    return body


_TAG = re.compile(r"^[0-9A-F]{8}$")


def well_formed(node: Any, path: str = "", what: str = "dataset") -> None:
    """DICOM JSON structure (PS3.18 F.2): upper-case 8-hex keys, a vr, at most one value
    form, Value an array; recursively through sequence items."""
    assert isinstance(node, dict), f"{path or what} is not a JSON object"
    for key, attribute in node.items():
        where = f"{path}/{key}"
        assert _TAG.match(key), f"{where}: attribute names must be 8 upper-case hex digits (F.2.1.1)"
        assert isinstance(attribute, dict) and isinstance(attribute.get("vr"), str), f"{where}: no vr"
        forms = [form for form in ("Value", "BulkDataURI", "InlineBinary") if form in attribute]
        assert len(forms) <= 1, f"{where}: more than one of Value/BulkDataURI/InlineBinary"
        if "Value" in attribute:
            assert isinstance(attribute["Value"], list), f"{where}: Value must be a JSON array"
        if attribute["vr"] == "SQ":
            for index, item in enumerate(attribute.get("Value", [])):
                well_formed(item, f"{where}[{index}]", what)
