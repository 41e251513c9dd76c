"""The repository stands alone: its code and docs cite files inside it, never the workspace around a checkout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Citations of files a clone does not have (the spec and design notes the project was started from).
OUTSIDE = re.compile(
    "|".join(
        [
            r"shared/spec",
            r"\.\./shared/(?!data)",
            r"\bDESIGN\.md",
            r"\bPERFORMANCE\.md",
            r"\becosystem\.md",
            r"spec/methods\.md",
        ]
    )
)
TEXT = (".py", ".md", ".smk", ".yaml", ".yml", ".sh", ".rst", ".toml", ".cfg", "Snakefile", "Makefile")


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [REPO / n for n in names if n.endswith(TEXT) and (REPO / n).is_file()]


def test_no_file_cites_files_outside_the_repository():
    found = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        for i, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(text):
                found.append(f"{path.relative_to(REPO)}:{i}: {text.strip()}")
    assert found == []


def test_relative_links_in_the_docs_resolve():
    broken = []
    for path in [p for p in tracked_text_files() if p.suffix == ".md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" not in target and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert broken == []
