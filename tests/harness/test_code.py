"""harness.run.code: a job's code is the static import closure of its command's handler (plus its method's file),
and a job refuses other code than the workflow planned (`harness.run.jobs.check_checkout`, `CodeCheck`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import command_entry
from harness.run.code import code_identity
from harness.run.jobs import CHECKOUT_ENV, CodeCheck, WrongCode, check_checkout

REPO = Path(__file__).resolve().parents[2]


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tiny repository: a dispatcher, a command module with two handlers, a method, shared and unrelated code."""
    write(tmp_path, "harness/__init__.py", "")
    write(tmp_path, "harness/__main__.py", "from harness.cli import main\n")
    write(tmp_path, "harness/cli.py", "import importlib\nfrom harness import other\n")
    write(tmp_path, "harness/other.py", "X = 1\n")
    write(tmp_path, "harness/shared.py", "from . import deep\nNAME = 'table.csv'\n")
    write(tmp_path, "harness/deep.py", "Y = 2\n")
    write(tmp_path, "harness/table.csv", "a,b\n")
    write(tmp_path, "harness/unused.csv", "c\n")
    write(tmp_path, "harness/pkg/__init__.py", "")
    write(
        tmp_path,
        "harness/pkg/commands.py",
        """
        import argparse

        def cmd_a(a):
            from harness.shared import NAME

        def cmd_b(a):
            from harness import other
        """,
    )
    write(tmp_path, "methods/__init__.py", "")
    write(tmp_path, "methods/m1.py", "import torch\nfrom harness.deep import Y\n")
    write(tmp_path, "methods/m2.py", "Z = 3\n")
    return tmp_path


def test_the_closure_of_a_handler_is_what_it_imports(tree):
    a = code_identity("harness.pkg.commands:cmd_a", root=tree)
    assert a.files == (
        "harness/__init__.py",
        "harness/__main__.py",
        "harness/cli.py",
        "harness/deep.py",
        "harness/pkg/__init__.py",
        "harness/pkg/commands.py",
        "harness/shared.py",
        "harness/table.csv",
    )
    b = code_identity("harness.pkg.commands:cmd_b", root=tree)
    assert "harness/other.py" in b.files and "harness/shared.py" not in b.files  # the dispatcher's imports: no
    with_method = code_identity("harness.pkg.commands:cmd_b", "m1", root=tree)
    assert {"methods/m1.py", "methods/__init__.py", "harness/deep.py"} <= set(with_method.files)
    assert "methods/m2.py" not in with_method.files


def test_the_hash_changes_with_a_reached_file_only(tree):
    before = code_identity("harness.pkg.commands:cmd_a", root=tree).sha256
    (tree / "harness" / "other.py").write_text("X = 2\n")  # not reached by cmd_a
    (tree / "harness" / "unused.csv").write_text("d\n")
    (tree / "methods" / "m2.py").write_text("Z = 4\n")
    assert code_identity("harness.pkg.commands:cmd_a", root=tree).sha256 == before
    (tree / "harness" / "table.csv").write_text("a,b,c\n")  # a data file the module names
    after_data = code_identity("harness.pkg.commands:cmd_a", root=tree).sha256
    assert after_data != before
    (tree / "harness" / "deep.py").write_text("Y = 3\n")  # reached through a relative import
    assert code_identity("harness.pkg.commands:cmd_a", root=tree).sha256 != after_data


def test_the_commands_of_the_workflow(tmp_path):
    """What the rules' jobs reach in this repository: training never reaches the metrics or the reports."""
    train = code_identity(*_entry("train", "supervised"))
    evaluate = code_identity(*_entry("evaluate"))
    tables = code_identity(*_entry("report-tables"))
    assert "methods/supervised.py" in train.files and "methods/dtc.py" not in train.files
    assert "harness/train/loop.py" in train.files and "harness/evaluate/metrics.py" not in train.files
    assert not any(f.startswith("harness/report/") for f in train.files)
    assert "harness/evaluate/metrics.py" in evaluate.files and "harness/train/loop.py" not in evaluate.files
    assert "harness/report/published.csv" in tables.files and not any(f.startswith("methods/") for f in tables.files)


def _entry(command: str, method: str | None = None) -> tuple[str, str | None]:
    entry, with_method = command_entry(command)
    return entry, method if with_method else None


def test_a_job_refuses_the_code_of_another_checkout(tmp_path):
    with pytest.raises(WrongCode, match=f"imports harness from {REPO}, but its workflow's Snakefile is in {tmp_path}"):
        check_checkout({CHECKOUT_ENV: str(tmp_path)})
    check_checkout({CHECKOUT_ENV: str(REPO)})
    check_checkout({})  # a command run by hand
    env = {"PATH": "/usr/bin:/bin", CHECKOUT_ENV: str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "harness", "check-config", "config/smoke.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and str(tmp_path) in res.stderr and str(REPO) in res.stderr


def test_a_job_refuses_code_that_changed_since_the_dag_was_built():
    entry, _ = command_entry("report-tables")
    planned = code_identity(entry).sha256
    assert CodeCheck(planned, entry).verify()["sha256"] == planned
    assert CodeCheck("", entry).verify()["sha256"] == planned  # by hand: nothing to compare, still recorded
    with pytest.raises(WrongCode, match="changed since the workflow built its DAG .*Rerun the workflow"):
        CodeCheck(planned[::-1], entry).verify()
