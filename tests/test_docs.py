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


def _resolves(dotted: str) -> bool:
    """Whether `harness.a.b` (or `harness.a.b.name`, `harness.a.b.Class.attr`) names a module or an attribute."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_every_module_name_and_command_of_the_architecture_page_exists():
    """docs/architecture.md stays true to the code: every file, module, function and command it names exists."""
    import argparse

    from harness.cli import build_parser

    text = (REPO / "docs" / "architecture.md").read_text()
    missing = []
    for name in set(re.findall(r"`((?:harness|methods|workflow)/[\w/.]*)`", text)):
        if not (REPO / name.split(" ")[0]).exists():
            missing.append(name)
    missing += [d for d in set(re.findall(r"`(harness(?:\.\w+)+)`", text)) if not _resolves(d)]
    for row in re.findall(r"^\| [^|]* \| `harness/(\w+)/`[^|]*\|[^|]*\| (.*) \|$", text, re.M):
        package, entries = row
        names = re.findall(r"`(\w+(?:\.\w+)+)`", entries)  # relative to the row's package, or to harness
        missing += [e for e in names if not (_resolves(f"harness.{package}.{e}") or _resolves(f"harness.{e}"))]
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    table = text.split("| rule | command | API |")[1].split("\n\n")[0]
    for cell in re.findall(r"^\| [^|]* \| ([^|]*) \|", table, re.M):
        missing += [c for c in re.findall(r"`([a-z][a-z-]+)(?: \[[^]]*\])?`", cell) if c not in commands]
    assert missing == []
