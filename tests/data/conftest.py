"""Fixtures of the data tests: local HTTP servers standing in for raw.githubusercontent.com and TCIA."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fakes import LA_MINI_ROOT, LA_PREFIX, FakeServer, build_tcia, need, static_app, tcia_app


@pytest.fixture(scope="session")
def la_server_session():
    """A server rooted at ../shared/data/la-mini (it repeats the public raw-file URL paths)."""
    need(LA_MINI_ROOT)
    with FakeServer(static_app(LA_MINI_ROOT)) as server:
        yield server


@pytest.fixture
def la_server(la_server_session):
    """The LA server with faults and hit counts reset after the test."""
    yield la_server_session
    la_server_session.faults.clear()
    la_server_session.hits.clear()


@pytest.fixture
def la_base_url(la_server) -> str:
    return la_server.url + LA_PREFIX


@pytest.fixture(scope="session")
def tcia_data(tmp_path_factory) -> dict:
    """Synthetic DICOM series (PANCREAS_0001, PANCREAS_0002), their getSeries listing and a label archive."""
    return build_tcia(tmp_path_factory.mktemp("tcia_src"))


@pytest.fixture(scope="session")
def tcia_server_session(tcia_data):
    with FakeServer(tcia_app(tcia_data)) as server:
        yield server


@pytest.fixture
def tcia_server(tcia_server_session):
    yield tcia_server_session
    tcia_server_session.faults.clear()
    tcia_server_session.hits.clear()


@pytest.fixture
def la_mini_ids() -> list[str]:
    """IDs of the LA cases present in la-mini."""
    base = need(LA_MINI_ROOT) / LA_PREFIX.lstrip("/") / "2018LA_Seg_Training Set"
    return sorted(p.name for p in Path(base).iterdir() if (p / "mri_norm2.h5").is_file())
