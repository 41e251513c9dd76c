"""The code version of a training run: which source files decide its numbers, and their hash.

`numeric_sources` are inputs of the `train` and `pretrain_<stage>` rules (Snakemake reruns them when a file changes)
and `code_sha256` is part of every checkpoint's identity (such a rerun never resumes from weights of other code).
No torch import: the Snakefile uses this module.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.config import sha256_of

#: Project files (besides `methods/<method>.py`) whose content decides a training run's numbers, as glob patterns
#: relative to the project root: the training side, the method contract, the networks and the numerics, and what
#: turns case files into batches.
NUMERIC_SOURCES = ("harness/train/*.py", "harness/method/*.py", "harness/nets/*.py", "harness/numerics/*.py",
                   "harness/data/dataset.py", "harness/data/prepared.py", "harness/data/splits.py",
                   "harness/config.py")  # fmt: skip


def numeric_sources(root: Path, method: str) -> list[Path]:
    """The method's file and the existing `NUMERIC_SOURCES` under the project `root`, in a fixed order."""
    files = [Path(root) / "methods" / f"{method}.py"]
    for pattern in NUMERIC_SOURCES:
        files += sorted(Path(root).glob(pattern))
    return [f for f in files if f.is_file()]


def code_sha256(root: Path, method: str) -> str:
    """sha256 over (relative path, content sha256) of `numeric_sources`: the code version of a training run."""
    root = Path(root)
    entries = [
        (str(f.relative_to(root)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in numeric_sources(root, method)
    ]
    return sha256_of(entries)
