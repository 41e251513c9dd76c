"""Train/test list files and the labeled subset (protocol.md §1.6, §2.5).

The labeled subset is the first N entries of the training list; it never depends on the seed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def read_list(path: str | Path) -> list[str]:
    """Read a case list: one ID per line, surrounding whitespace stripped, empty lines skipped, file order kept.

    Args:
        path: a `train.list` / `test.list` file.

    Returns:
        The IDs in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds no ID, or an ID more than once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"case list {path} does not exist")
    ids = [line.strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i]
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
