"""Registry: keys equal file stems, lookups explain themselves, duplicates are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.method import Method
from harness.method.registry import get_method, list_methods, register_method

REPO = Path(__file__).resolve().parents[2]


def test_registered_names_equal_method_file_stems():
    stems = sorted(p.stem for p in (REPO / "methods").glob("*.py") if not p.stem.startswith("_"))
    assert list_methods() == stems


def test_unknown_method_suggests_close_names():
    with pytest.raises(KeyError, match=r"Did you mean supervised\?"):
        get_method("supervized")


def test_list_methods_pattern():
    assert list_methods("super*") == ["supervised"]
    assert list_methods("nothing*") == []


def test_duplicate_and_misnamed_registration_refused():
    with pytest.raises(ValueError, match="registered twice"):

        class Again(Method):
            pass

        Again.__module__ = "methods.supervised"
        register_method("supervised")(Again)
    with pytest.raises(ValueError, match="must be registered from methods/other.py"):

        class Misnamed(Method):
            pass

        Misnamed.__module__ = "methods.something"
        register_method("other")(Misnamed)
