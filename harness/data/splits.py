"""Train/test list files, the validation split and the labeled subset (docs/protocol.md §1.6, §2.5, "Checkpoint
selection").

By default (the published protocol) there are no validation cases and the labeled subset is the first N entries of
the training list, whatever the seed. A validation split (`ValSplit`) is drawn from the positions no labeled count
reaches; `seeded` draws the labeled cases per training seed from the rest.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: A case ID that is safe as a path component: no separators, no dots, not empty, at most 128 characters
#: (LA: 20 upper-case alphanumerics, Pancreas: `image0001`, synthetic: like LA).
SAFE_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
SAFE_CASE_ID_RULE = (
    "no path separators or dots; letters, digits, '_' and '-' only, starting with a letter or digit, "
    "at most 128 characters"
)

#: Training cases of the released LA list (protocol §1.6).
LA_N_TRAIN = 80
#: The two MC-Net Pancreas cases that today's TCIA download may lack, with their MC-Net list (protocol §2.2).
PANCREAS_DUPLICATES = {"image0025": "test", "image0070": "train"}
#: MC-Net train-list size (protocol §2.5) and the split tags of the two variants (protocol §2.2).
PANCREAS_N_TRAIN = 62
SPLIT_MCNET, SPLIT_MCNET_MINUS = "mcnet", "mcnet_minus_0025_0070"
#: Stream tags of the two draws (numpy `default_rng([seed, tag])`): never the stream of any other draw.
VAL_STREAM, LABELED_STREAM = 0x76616C, 0x6C6162


def _checked_ids(path: Path, text: str) -> list[str]:
    """The non-empty stripped lines of `text`; ValueError naming the file, line and rule for an unsafe ID."""
    ids = []
    for number, line in enumerate(text.splitlines(), start=1):
        cid = line.strip()
        if not cid:
            continue
        if not SAFE_CASE_ID.fullmatch(cid):
            raise ValueError(
                f"case list {path}, line {number}: unsafe case ID {cid!r} (a case ID has {SAFE_CASE_ID_RULE}); "
                "correct that line"
            )
        ids.append(cid)
    return ids


def read_list(path: str | Path) -> list[str]:
    """Read a case list: one ID per line, surrounding whitespace stripped, empty lines skipped, file order kept.

    Every ID must match `SAFE_CASE_ID`, since IDs become file and folder names (a `../` would leave the data root).

    Args:
        path: a `train.list` / `test.list` file.

    Returns:
        The IDs in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an ID does not match `SAFE_CASE_ID` (the message names the file, the line and the rule), the file
            holds no ID, or an ID more than once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"case list {path} does not exist")
    ids = _checked_ids(path, path.read_text())
    if not ids:
        raise ValueError(f"case list {path} holds no IDs")
    dups = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dups:
        raise ValueError(f"case list {path} holds duplicate IDs: {dups}")
    return ids


def labeled_subset(train_ids: list[str], n_labeled: int) -> tuple[list[str], list[str]]:
    """Split the training IDs into (labeled, unlabeled) = (first `n_labeled`, the rest), order kept.

    Args:
        train_ids: training IDs in list-file order.
        n_labeled: how many are labeled, 1 <= n_labeled <= len(train_ids).

    Returns:
        (labeled IDs, unlabeled IDs).
    """
    if not 1 <= n_labeled <= len(train_ids):
        raise ValueError(f"n_labeled must be in [1, {len(train_ids)}] (the number of training IDs); got {n_labeled}")
    return list(train_ids[:n_labeled]), list(train_ids[n_labeled:])


@dataclass(frozen=True)
class RunSplit:
    """The training cases of one run: labeled (with labels), unlabeled (images only) and validation cases (labels
    read only to select the checkpoint), each in training-list order; disjoint from each other and from the test
    list."""

    labeled: tuple[str, ...]
    unlabeled: tuple[str, ...]
    val: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {"labeled": list(self.labeled), "unlabeled": list(self.unlabeled), "val": list(self.val)}


def val_cases(train_ids: list[str], *, count: int, seed: int, ids: tuple[str, ...] = (), after: int = 0) -> list[str]:
    """The validation cases, in list order: `ids` (checked), else `count` cases drawn with `seed` among positions
    >= `after` (the positions no labeled count reaches). ValueError naming the problem."""
    candidates = list(train_ids[after:])
    if ids:
        outside = [i for i in ids if i not in candidates]
        if outside:
            raise ValueError(
                f"validation cases {outside} are not in the training list past its first {after} cases (the labeled "
                "ones, or test cases): list cases of train.list that no labeled count reaches"
            )
        return [i for i in train_ids if i in ids]
    if count > len(candidates):
        raise ValueError(
            f"{count} validation cases asked for, but only {len(candidates)} training cases follow the "
            f"first {after} (the labeled ones)"
        )
    chosen = set(np.random.default_rng([seed, VAL_STREAM]).choice(len(candidates), size=count, replace=False))
    return [c for k, c in enumerate(candidates) if k in chosen]


def run_split(
    train_ids: list[str], n_labeled: int, *, val: tuple[str, ...] = (), labeled: str = "first", seed: int = 0
) -> RunSplit:
    """A run's cases: the validation cases `val` out, then `labeled` = "first" (the first `n_labeled` of the rest,
    the reference repositories' rule) or "seeded" (`n_labeled` drawn with the training `seed`, nested across labeled
    counts: the first N of one seeded permutation)."""
    rest = [i for i in train_ids if i not in set(val)]
    if labeled == "first":
        chosen, others = labeled_subset(rest, n_labeled)
        return RunSplit(tuple(chosen), tuple(others), tuple(val))
    if not 1 <= n_labeled <= len(rest):
        raise ValueError(f"n_labeled must be in [1, {len(rest)}]; got {n_labeled}")
    order = np.random.default_rng([seed, LABELED_STREAM]).permutation(len(rest))
    picked = {rest[k] for k in order[:n_labeled]}
    return RunSplit(tuple(i for i in rest if i in picked), tuple(i for i in rest if i not in picked), tuple(val))
