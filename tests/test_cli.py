"""Each `python -m harness` subcommand as a subprocess on synthetic data (the commands the rules run)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def harness(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"harness {args[0]} failed:\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """make-synthetic, resolve-run, train, predict, evaluate, report-tables, report-figures in one folder."""
    work = tmp_path_factory.mktemp("cli")
    harness("make-synthetic", "--out", "resources/tiny", "--seed", "2", "--n-train", "4", "--n-test", "2", cwd=work)
    params = {
        "dataset": "tiny",
        "method": "supervised",
        "n_labeled": 2,
        "seed": 7,
        "data": {"root": "resources/tiny", "n_train": 4, "patch_size": [16, 16, 16], "augment": "rotflip_crop"},
        "protocol": {"iterations": 3, "n_filters": 2},
        "threads": 1,
        "method_overrides": {},
    }
    run = work / "runs" / "r"
    harness("resolve-run", "--params", json.dumps(params), "--out", str(run / "run_config.yaml"), cwd=work)
    harness(
        "train",
        "--run-config",
        str(run / "run_config.yaml"),
        "--run-dir",
        str(run),
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        cwd=work,
    )
    common = ["--run-config", str(run / "run_config.yaml"), "--spacing", "0.5", "0.5", "2"]
    harness(
        "predict",
        *common,
        "--model",
        str(run / "model.pt"),
        "--out",
        str(run / "predictions"),
        "--stride",
        "8",
        "8",
        "8",
        "--windows",
        "3",
        "--device",
        "cpu",
        cwd=work,
    )
    harness(
        "evaluate",
        *common,
        "--predictions",
        str(run / "predictions"),
        "--run-info",
        str(run / "run_info.json"),
        "--empty-pred",
        "worst_case",
        "--out-csv",
        str(run / "metrics_per_case.csv"),
        "--out-json",
        str(run / "metrics.json"),
        cwd=work,
    )
    harness(
        "report-tables",
        "--name",
        "cli",
        "--out",
        "out",
        "--inputs",
        str(run / "metrics_per_case.csv"),
        "--published-source",
        "none",
        "--bootstrap-samples",
        "100",
        cwd=work,
    )
    harness(
        "report-figures",
        "--out",
        "out/figures",
        "--inputs",
        str(run / "metrics_per_case.csv"),
        "--published-source",
        "none",
        cwd=work,
    )
    return work


def test_make_synthetic_layout(pipeline):
    root = pipeline / "resources" / "tiny"
    assert len((root / "train.list").read_text().split()) == 4 and len((root / "test.list").read_text().split()) == 2
    assert json.loads((root / "manifest.json").read_text())["source"] == "synthetic"


def test_train_outputs_and_provenance(pipeline):
    run = pipeline / "runs" / "r"
    cfg = yaml.safe_load((run / "run_config.yaml").read_text())
    info = json.loads((run / "run_info.json").read_text())
    assert cfg["protocol"]["labeled_bs"] == 4  # supervised: all four samples labeled
    assert info["config"] == cfg and len(info["config_sha256"]) == 64
    assert info["data_manifest_sha256"] and info["packages"]["torch"]
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 3


def test_predictions_are_nifti_with_spacing(pipeline):
    run = pipeline / "runs" / "r"
    test_ids = (pipeline / "resources" / "tiny" / "test.list").read_text().split()
    for case in test_ids:
        img = nib.load(run / "predictions" / f"{case}.nii.gz")
        assert img.header.get_zooms() == pytest.approx((0.5, 0.5, 2.0))
        assert set(img.get_fdata().ravel().tolist()) <= {0.0, 1.0}


def test_per_case_csv_and_metrics_json(pipeline):
    run = pipeline / "runs" / "r"
    rows = list(csv.DictReader((run / "metrics_per_case.csv").open()))
    assert len(rows) == 2 and {r["empty_pred_policy"] for r in rows} == {"worst_case"}
    info = json.loads((run / "run_info.json").read_text())
    assert {r["config_sha256"] for r in rows} == {info["config_sha256"]}
    for r in rows:
        assert 0.0 <= float(r["dice"]) <= 1.0
        if not int(r["empty_pred"]):  # mm distances = voxel distances scaled by spacing ∈ [0.5, 2]
            assert 0.5 * float(r["hd95"]) - 1e-9 <= float(r["hd95_mm"]) <= 2.0 * float(r["hd95"]) + 1e-9
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_cases"] == 2 and metrics["eval"]["empty_pred"] == "worst_case"


def test_aggregate_and_figures(pipeline):
    out = pipeline / "out"
    for unit in ("voxel", "mm"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"tiny_{unit}.{ext}").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert "supervised@labeled~2" in summary["cells"]["tiny"]
    assert summary["provenance"]["config_name"] == "cli"
    assert (out / "figures" / "dice_vs_labeled.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_check_config(tmp_path):
    from harness.workflow.grid import grid_cells

    ok = harness("check-config", str(REPO / "config" / "smoke.yaml"), cwd=tmp_path)
    n_runs = len(grid_cells(yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())))
    assert f"{n_runs} runs resolve" in ok.stderr
    paper = harness("check-config", str(REPO / "config" / "config.yaml"), cwd=tmp_path)
    assert "126 runs resolve" in paper.stderr  # 10 methods × (LA 8/16 + Pancreas 6/12) × 3 seeds + 6 upper bounds
    broken = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    broken["methods"].append("not_a_method")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(broken))
    bad = harness("check-config", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "methods not implemented yet: not_a_method" in bad.stderr


def test_resolve_run_error_is_readable(tmp_path):
    params = {
        "dataset": "d",
        "method": "supervised",
        "n_labeled": 1,
        "seed": 1,
        "data": {"root": "x", "n_train": 2, "patch_size": [16, 16, 16]},
        "protocol": {"lr": "high"},
    }
    res = harness("resolve-run", "--params", json.dumps(params), "--out", "x.yaml", cwd=tmp_path, check=False)
    assert res.returncode == 2 and "protocol.lr: expected a number, got 'high'" in res.stderr
    assert not (tmp_path / "x.yaml").exists()
