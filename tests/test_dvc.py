"""The DVC view (dvc.yaml): `dvc repro` of the smoke stage in a temporary git repository, then `dvc metrics show`.

The project's tracked files are copied into a fresh git repository and config/smoke.yaml is replaced by CI's tiny
grid (renamed `smoke`), so the real dvc.yaml and Snakefile run end to end in seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


@pytest.mark.slow
def test_dvc_repro_and_metrics_show(tmp_path):
    files = run("git", "ls-files", "-z", cwd=REPO).split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, tmp_path / rel)
    tiny = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    tiny["name"] = "smoke"
    (tmp_path / "config" / "smoke.yaml").write_text(yaml.safe_dump(tiny))
    run("git", "init", "-q", cwd=tmp_path)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A", cwd=tmp_path)
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy", cwd=tmp_path)
    run("dvc", "init", "-q", cwd=tmp_path)
    run("dvc", "repro", "smoke", cwd=tmp_path)
    assert (tmp_path / "results" / "smoke" / "summary.json").exists()
    shown = run("dvc", "metrics", "show", "--json", cwd=tmp_path)
    assert "summary.json" in shown and "dice_mean" in shown
    status = run("dvc", "status", cwd=tmp_path)
    assert "changed" not in status  # the lock matches what repro produced
