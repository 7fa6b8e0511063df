"""Fixtures of the black-box UPS-RS suite: server URL, HTTP client, workitem factories.

The server URL comes from ``--ups-url`` or the ``AIW_CONFORMANCE_URL`` environment variable
and is the service root (``{url}/workitems`` is the workitems resource).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import httpx
import pytest

from .api import Ups
from .dicomjson import Dataset, token
from .workitem import new_workitem

ENV_VAR = "AIW_CONFORMANCE_URL"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--ups-url`` (the env var is the alternative for CI)."""
    parser.addoption(
        "--ups-url", action="store", default=None,
        help=f"UPS-RS service root, so that URL/workitems is the workitems resource (or ${ENV_VAR})",
    )


@pytest.fixture(scope="session")
def base_url(pytestconfig: pytest.Config) -> str:
    """The service root under test; stop the run with a usage message when none is given."""
    url = pytestconfig.getoption("--ups-url") or os.environ.get(ENV_VAR)
    if not url:
        pytest.exit(f"no server: pass --ups-url URL or set {ENV_VAR}", returncode=4)
    return url.rstrip("/")


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    """One HTTP client for the run; stop at once when the server is unreachable."""
    with httpx.Client(timeout=httpx.Timeout(60.0), follow_redirects=False) as http:
        try:
            http.get(f"{base_url}/workitems", params={"limit": "1"}, headers={"Accept": "application/dicom+json"})
        except httpx.TransportError as exc:
            pytest.exit(f"UPS-RS server at {base_url} is unreachable: {exc}", returncode=3)
        yield http


@pytest.fixture(scope="session")
def ups(client: httpx.Client, base_url: str) -> Ups:
    """The UPS-RS user agent used by every test."""
    return Ups(client, base_url)


@pytest.fixture
def label() -> str:
    """A Worklist Label unique to this test, so searches on a shared server see only its items."""
    return token("WL-", 16)


@pytest.fixture
def make_workitem() -> Callable[..., Dataset]:
    """Factory for complete N-CREATE datasets (see ``conformance.workitem.new_workitem``)."""
    return new_workitem


@pytest.fixture
def scheduled(ups: Ups) -> str:
    """UID of a fresh SCHEDULED workitem."""
    return ups.create_ok(new_workitem())


@pytest.fixture
def in_progress(ups: Ups, scheduled: str) -> tuple[str, str]:
    """(UID, Transaction UID) of a fresh workitem claimed by this test."""
    return scheduled, ups.claim(scheduled)


@pytest.fixture
def completed(ups: Ups, in_progress: tuple[str, str]) -> tuple[str, str]:
    """(UID, Transaction UID) of a workitem this test completed."""
    uid, tuid = in_progress
    ups.complete(uid, tuid)
    return uid, tuid


@pytest.fixture
def canceled(ups: Ups, in_progress: tuple[str, str]) -> tuple[str, str]:
    """(UID, Transaction UID) of a workitem this test canceled with Change State."""
    uid, tuid = in_progress
    ups.cancel(uid, tuid)
    return uid, tuid
