"""The one way the harness writes a file or a folder: under `<name>.tmp` beside it, renamed into place when complete.

A reader therefore sees the old content or the new, never half of it, and a writer killed midway leaves only a
`.tmp` that the next attempt (and `harness.run.lineage.start_job`) removes. No torch import.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

TMP_SUFFIX = ".tmp"


def tmp_path(path: str | os.PathLike) -> Path:
    """Where `path` is written before it is renamed into place: `<name>.tmp` in the same folder."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def remove(path: Path) -> bool:
    """Delete a file, link or folder tree; whether there was one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return False
    return True


@contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield the temporary path to write `path` through; on success it replaces `path` (a folder: as a whole).

    Args:
        path: the destination; its parent folder is created.
        directory: the destination is a folder (the temporary folder is created empty).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(dest)
    remove(tmp)
    if directory:
        tmp.mkdir()
    try:
        yield tmp
        if directory and dest.exists() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        remove(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> Path:
    """Write `data` as JSON (non-JSON values as their str) with a final newline, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=indent, default=str) + "\n")


def write_yaml_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as YAML in its key order, atomically."""
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
