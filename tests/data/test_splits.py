"""Case lists and the first-N labeled subset (docs/protocol.md §1.6)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.data.splits import SAFE_CASE_ID, labeled_subset, read_list

LA_LISTS = Path(__file__).resolve().parents[3] / "shared" / "data" / "la-mini" / "yulequan" / "UA-MT"
LA_LISTS = LA_LISTS / "88ed29ad794f877122e542a7fa9505a76fa83515" / "data"
FIRST_16 = [
    "06SR5RBREL16DQ6M8LWS",
    "0RZDK210BSMWAA6467LU",
    "1D7CUD1955YZPGK8XHJX",
    "1GU15S0GJ6PFNARO469W",
    "1MHBF3G6DCPWHSKG7XCP",
    "23X6SY44VT9KFHR7S7OC",
    "2XL5HSFSE93RMOJDRGR4",
    "38CWS74285MFGZZXR09Z",
    "3C2QTUNI0852XV7ZH4Q1",
    "3DA0T2V6JJ2NLUAV6FWM",
    "4498CA6DZWELOXCBRYRF",
    "45C45I6IXAFGNRO067W9",
    "4CHFJGF6ZUM7CMZTNFQF",
    "4EPVTT1HPA8U60CDUKXE",
    "57SGAJMLCTCH92QUA0EE",
    "5BHTH9RHH3PQT913I59W",
]


def _need(path: Path) -> None:
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing test data {path}")
        pytest.skip(f"missing test data {path}")


def test_read_list_strips_and_skips_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "train.list"
    p.write_text("B\n  A  \n\n\r\nC\r\n")
    assert read_list(p) == ["B", "A", "C"]  # file order, not sorted


def test_read_list_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.list"):
        read_list(tmp_path / "nope.list")


@pytest.mark.parametrize("text", ["", "\n \n"])
def test_read_list_empty(tmp_path: Path, text: str) -> None:
    p = tmp_path / "empty.list"
    p.write_text(text)
    with pytest.raises(ValueError, match=r"empty\.list.*no IDs"):
        read_list(p)


def test_read_list_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "dup.list"
    p.write_text("A\nB\nA\nC\nC\n")
    with pytest.raises(ValueError, match=r"dup\.list.*\['A', 'C'\]"):
        read_list(p)


@pytest.mark.parametrize(
    "bad", ["../../../../x", "..", "a/b", "a\\b", "/etc", "a.b", ".hidden", "-a", "_a", "a b", "ä", "A" * 129]
)
def test_read_list_refuses_unsafe_ids(tmp_path: Path, bad: str) -> None:
    p = tmp_path / "test.list"
    p.write_text(f"A\n\n{bad}\nB\n")
    rule = r"no path separators or dots; letters, digits, '_' and '-'"
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(p))}, line 3: unsafe case ID {re.escape(repr(bad))}.*{rule}"
    ):
        read_list(p)


@pytest.mark.parametrize("good", ["06SR5RBREL16DQ6M8LWS", "image0001", "a_b-C9", "0", "A" * 128])
def test_read_list_accepts_la_pancreas_and_synthetic_ids(tmp_path: Path, good: str) -> None:
    p = tmp_path / "train.list"
    p.write_text(f"{good}\n")
    assert read_list(p) == [good]
    assert SAFE_CASE_ID.fullmatch(good)


def test_labeled_subset_first_n() -> None:
    ids = ["e", "a", "d", "b", "c"]
    assert labeled_subset(ids, 2) == (["e", "a"], ["d", "b", "c"])
    assert labeled_subset(ids, 1) == (["e"], ["a", "d", "b", "c"])
    assert labeled_subset(ids, 5) == (ids, [])
    assert ids == ["e", "a", "d", "b", "c"]  # input untouched


@pytest.mark.parametrize("n", [0, -1, 6])
def test_labeled_subset_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match=rf"\[1, 5\].*got {n}"):
        labeled_subset(list("abcde"), n)


def test_real_la_lists() -> None:
    _need(LA_LISTS / "train.list")
    train, test = read_list(LA_LISTS / "train.list"), read_list(LA_LISTS / "test.list")
    assert len(train) == 80 and len(test) == 20 and not set(train) & set(test)
    assert train == sorted(train)
    assert test[:3] == ["UPT6DX9IQY9JAZ7HJKA7", "UTBUJIWZMKP64E3N73YC", "ULHWPWKKLTE921LQLH1P"]  # file order kept
    labeled, unlabeled = labeled_subset(train, 16)
    assert labeled == FIRST_16 and len(unlabeled) == 64
    assert labeled_subset(train, 8)[0] == FIRST_16[:8]


def test_the_validation_split_is_deterministic_disjoint_and_past_every_labeled_count():
    from harness.data.splits import run_split, val_cases

    train = [f"c{i:02d}" for i in range(20)]
    val = val_cases(train, count=4, seed=3, after=8)
    assert val == val_cases(train, count=4, seed=3, after=8) and val != val_cases(train, count=4, seed=4, after=8)
    assert len(val) == 4 and all(train.index(c) >= 8 for c in val) and val == sorted(val, key=train.index)
    for n in (4, 8):
        split = run_split(train, n, val=tuple(val))
        assert split.labeled == tuple(train[:n])  # the labeled subset of the published protocol
        everything = [*split.labeled, *split.unlabeled, *split.val]
        assert sorted(everything) == sorted(train) and len(set(everything)) == len(train)
    assert val_cases(train, count=0, seed=0, ids=("c19", "c10"), after=8) == ["c10", "c19"]
    with pytest.raises(ValueError, match=r"\['c03'\] are not in the training list past its first 8"):
        val_cases(train, count=0, seed=0, ids=("c03",), after=8)
    with pytest.raises(ValueError, match="13 validation cases asked for, but only 12"):
        val_cases(train, count=13, seed=0, after=8)


def test_a_seeded_labeled_subset_differs_across_seeds_and_first_does_not():
    from harness.data.splits import run_split

    train = [f"c{i:02d}" for i in range(20)]
    first = {seed: run_split(train, 4, seed=seed).labeled for seed in (1, 2, 3)}
    assert set(first.values()) == {tuple(train[:4])}
    seeded = {seed: run_split(train, 4, labeled="seeded", seed=seed).labeled for seed in (1, 2, 3)}
    assert len(set(seeded.values())) == 3 and seeded[1] == run_split(train, 4, labeled="seeded", seed=1).labeled
    eight = run_split(train, 8, labeled="seeded", seed=1).labeled
    assert set(seeded[1]) <= set(eight)  # nested across labeled counts, like the first N
