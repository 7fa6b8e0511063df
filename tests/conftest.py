"""Fixtures: a real redis-server per test session, ``aiw server`` processes over it (and
over the embedded store), and HTTP clients that speak DICOM JSON."""

from __future__ import annotations

import os
from typing import Iterator

# Every dataset the suite sends (to the library and to the servers it starts) that the
# compiled schema accepts is checked by the validation engine too (upsrs/schema.py).
os.environ.setdefault("AIW_VALIDATION_CROSSCHECK", "1")

import httpx
import pytest

from tests import orthanc as torthanc
from tests.servers import RedisProcess, ServerProcess, start_redis, start_server


@pytest.fixture(scope="session")
def redis_proc() -> Iterator[RedisProcess]:
    r = start_redis()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def redis_server_url(redis_proc: RedisProcess) -> Iterator[str]:
    """``aiw server`` on the session's real redis-server."""
    srv = start_server(redis_proc.url)
    yield srv.url
    srv.stop()


@pytest.fixture(scope="session")
def embedded_server_url() -> Iterator[str]:
    srv = start_server(None)
    yield srv.url
    srv.stop()


@pytest.fixture(scope="session", params=["redis", "embedded"])
def server_url(request: pytest.FixtureRequest) -> str:
    """The core suite runs on both stores: a real redis-server and the embedded one."""
    return request.getfixturevalue(f"{request.param}_server_url")


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, headers={"content-type": "application/dicom+json"}, timeout=30) as c:
        yield c


@pytest.fixture
def redis_client(redis_server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=redis_server_url, headers={"content-type": "application/dicom+json"}, timeout=30) as c:
        yield c


@pytest.fixture
def fresh_server(redis_proc: RedisProcess) -> Iterator[ServerProcess]:
    """A server of its own (own key prefix) for tests that stop or configure it."""
    srv = start_server(redis_proc.url)
    yield srv
    srv.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stable_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[torthanc.Orthanc]:
    """Orthanc (DICOMweb) for a test module, declaring studies stable one second after
    their last instance instead of sixty."""
    o = torthanc.start_orthanc(tmp_path_factory.mktemp("orthanc"), extra_config={"StableAge": 1})
    yield o
    o.stop()


@pytest.fixture(scope="module")
def module_server_url(redis_proc: RedisProcess) -> Iterator[str]:
    """``aiw server`` of a test module's own (own key prefix) on the session's Redis."""
    srv = start_server(redis_proc.url)
    yield srv.url
    srv.stop()
