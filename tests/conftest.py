"""Shared fixtures: paths, the shared LA mini set, a tiny synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LA_MINI = SHARED / "data" / "la-mini" / "yulequan" / "UA-MT" / "88ed29ad794f877122e542a7fa9505a76fa83515" / "data"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def la_mini() -> Path:
    """The real LA cases of ../shared/data/la-mini (fail under CI if missing, else skip)."""
    if not LA_MINI.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{LA_MINI} is missing: CI needs ../shared/data beside the checkout")
        pytest.skip(f"{LA_MINI} not found (../shared/data is not beside this checkout)")
    return LA_MINI


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset of 4 train + 2 test cases in the released LA layout with its real manifest.json (written
    once per session by `write_synthetic_la`; tests must not modify it)."""
    from harness.data.synthetic import write_synthetic_la

    root = tmp_path_factory.mktemp("synthetic")
    write_synthetic_la(root, n_train=4, n_test=2, seed=5, shape_xy=((36, 40), (34, 38)), shape_z=20)
    return root
