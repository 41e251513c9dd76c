"""Train/test list files and the labeled subset (docs/protocol.md §1.6, §2.5).

The labeled subset is the first N entries of the training list; it never depends on the seed.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

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
