"""harness.report.sensitivity: the largest component, every evaluation variant against harness.evaluate.metrics, and
the table recomputed from saved predictions (its primary variant equals what the evaluate step writes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config import DataConfig, ProtocolConfig, RunConfig
from harness.data.prepared import PreparedData
from harness.evaluate.metrics import case_metrics, secondary_metrics
from harness.evaluate.predictions import make_record, save_nifti, write_record
from harness.io import write_yaml_atomic
from harness.report.sensitivity import (
    VARIANTS,
    build_sensitivity_table,
    case_variants,
    largest_component,
    sensitivity_per_case,
    write_sensitivity,
)

SPACING = (0.5, 0.5, 2.0)


# ------------------------------------------------------------------------------------------- largest component
def test_largest_component_uses_26_connectivity():
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = 1  # 3 voxels touching only at corners: one 26-component
    mask[5, 5, 5] = mask[5, 5, 6] = 1  # 2 face-connected voxels
    kept = largest_component(mask)
    assert kept.dtype == bool and kept.sum() == 3 and kept[1, 1, 1] and not kept[5, 5, 5]


def test_largest_component_ties_empty_and_bad_input():
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[0, 0, 0:2] = True
    mask[4, 4, 0:2] = True  # equally large: the first in C order is kept
    kept = largest_component(mask)
    assert kept[0, 0, 0] and not kept[4, 4, 0]
    assert not largest_component(np.zeros((3, 3, 3))).any()
    with pytest.raises(ValueError, match="mask"):
        largest_component(np.ones((3, 3)))


# ----------------------------------------------------------------------------------------------- case variants
def blob_pair() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((24, 24, 16), dtype=np.uint8)
    gt[6:14, 6:14, 4:10] = 1
    pred = np.zeros_like(gt)
    pred[7:14, 6:15, 4:10] = 1
    pred[18:22, 18:22, 11:15] = 1  # a distant false-positive island (~10 % of the pooled surface voxels)
    return pred, gt


def test_case_variants_against_the_metric_module():
    pred, gt = blob_pair()
    out = case_variants(pred, gt, spacing_mm=SPACING, policy="worst_case")
    assert set(out) == set(VARIANTS) - {"empty=worst_case"}
    assert out["primary"] == case_metrics(pred, gt, spacing=None, empty_pred="worst_case")
    assert out["mm"] == case_metrics(pred, gt, spacing=SPACING, empty_pred="worst_case")
    cleaned = pred.copy()
    cleaned[18:22, 18:22, 11:15] = 0
    assert out["lcc"] == case_metrics(cleaned, gt, spacing=None, empty_pred="worst_case")
    assert out["lcc"]["hd95"] < out["primary"]["hd95"]  # the island dominated the 95th percentile
    secondary = secondary_metrics(pred, gt, spacing=None)
    assert out["hd95_max_dir"]["hd95"] == secondary["hd95_max_dir"]
    assert out["assd"]["asd"] == secondary["assd"]
    assert out["hd95_max_dir"]["dice"] == out["primary"]["dice"] and out["assd"]["hd95"] == out["primary"]["hd95"]
    for policy in ("nan", "reference_zero"):  # a non-empty prediction does not depend on the policy
        assert out[f"empty={policy}"]["hd95"] == out["primary"]["hd95"]
        assert out[f"empty={policy}"]["empty_pred_policy"] == policy


def test_case_variants_of_an_empty_prediction():
    _, gt = blob_pair()
    empty = np.zeros_like(gt)
    out = case_variants(empty, gt, spacing_mm=SPACING, policy="nan")
    diagonal = math.sqrt(24**2 + 24**2 + 16**2)
    assert out["empty=worst_case"]["hd95"] == pytest.approx(diagonal)
    assert out["empty=reference_zero"]["asd"] == 0.0 and out["empty=reference_zero"]["dice"] == 0.0
    assert math.isnan(out["primary"]["hd95"]) and math.isnan(out["lcc"]["hd95"])  # LCC skipped, policy kept
    assert math.isnan(out["hd95_max_dir"]["hd95"]) and out["hd95_max_dir"]["empty_pred"]
    assert math.isnan(out["mm"]["asd"])
    with pytest.raises(ValueError, match="policy"):
        case_variants(empty, gt, spacing_mm=SPACING, policy="zero")


# ----------------------------------------------------------------------------------------------- saved runs
def write_run(tmp: Path, root: Path, method: str, n: int, seed: int, make_pred) -> Path:
    """A run folder as the workflow leaves it: run_config.yaml, run_info.json and predictions/ (<case>.nii.gz from
    make_pred(case, gt) and the predictions.json record naming the run's model and data)."""
    run = tmp / "runs" / method / f"labeled~{n}" / f"seed~{seed}"
    data = DataConfig(root=str(root), n_train=4, patch_size=(16, 16, 16))
    cfg = RunConfig(dataset="tiny", method=method, n_labeled=n, seed=seed, data=data, protocol=ProtocolConfig())
    write_yaml_atomic(run / "run_config.yaml", cfg.to_dict())
    prepared = PreparedData.open(root, "la_h5")
    model = f"model-{method}-{n}-{seed}".ljust(64, "0")
    info = {
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "code_sha256": "c" * 64,
        "method_version": 1,
        "git_commit": "abc",
        "model_sha256": model,
        "data_manifest_sha256": prepared.manifest_sha256,
    }
    (run / "run_info.json").write_text(json.dumps(info))
    (run / "predictions").mkdir()
    for i, case in enumerate(prepared.test_ids):
        _, gt = prepared.load(case, with_label=True)
        pred = make_pred(i, gt).astype(np.uint8)
        save_nifti(pred, SPACING, run / "predictions" / f"{case}.nii.gz")
    settings = {"stride": [8, 8, 8], "windows_per_batch": 4, "spacing_mm": list(SPACING)}
    write_record(
        run / "predictions",
        make_record(model_sha256=model, config_sha256=cfg.sha256(), data=prepared, settings=settings),
    )
    return run / "run_config.yaml"


def island(i: int, gt: np.ndarray) -> np.ndarray:
    pred = gt.copy()
    pred[0:2, 0:2, 0:2] = 1  # far from the object in the corner of the volume
    return pred


def eroded_or_empty(i: int, gt: np.ndarray) -> np.ndarray:
    if i == 0:
        return np.zeros_like(gt)
    pred = gt.copy()
    pred[:, :, : gt.shape[2] // 2] = 0
    return pred


@pytest.fixture
def runs(tmp_path, tiny_dataset) -> list[Path]:
    return [
        write_run(tmp_path, tiny_dataset, "supervised", 2, 1, lambda i, gt: gt),
        write_run(tmp_path, tiny_dataset, "supervised", 2, 2, island),
        write_run(tmp_path, tiny_dataset, "ua_mt", 2, 1, eroded_or_empty),
    ]


def test_primary_variant_equals_the_evaluate_step(runs):
    from harness.config import load_run_config
    from harness.evaluate.score import evaluate_cases

    per_case = sensitivity_per_case(runs, spacing_mm=SPACING, policy="worst_case")
    assert len(per_case) == 3 * 2 * (len(VARIANTS) - 1)
    for path in runs:
        cfg = load_run_config(path)
        info = json.loads((path.parent / "run_info.json").read_text())
        rows = evaluate_cases(
            cfg, path.parent / "predictions", spacing_mm=SPACING, empty_pred="worst_case", run_info=info
        )
        for row in rows:
            mine = per_case[
                (per_case["method"] == cfg.method) & (per_case["seed"] == cfg.seed) & (per_case["case"] == row["case"])
            ].set_index("variant")
            for metric in ("dice", "jaccard", "hd95", "asd"):
                assert mine.loc["primary", metric] == row[metric]
            assert mine.loc["mm", "hd95"] == row["hd95_mm"] and mine.loc["mm", "unit"] == "mm"
            assert mine.loc["primary", "empty_pred"] == row["empty_pred"]
    lcc = per_case[(per_case["seed"] == 2) & (per_case["variant"] == "lcc")]
    assert (lcc["dice"] == 1.0).all() and (lcc["hd95"] == 0.0).all()  # the island removed: a perfect prediction


def test_workers_give_the_same_rows(runs):
    one = sensitivity_per_case(runs, spacing_mm=SPACING, policy="nan")
    two = sensitivity_per_case(runs, spacing_mm=SPACING, policy="nan", workers=2)
    pd.testing.assert_frame_equal(one, two)


def test_sensitivity_table_and_files(runs, tmp_path):
    written = write_sensitivity(
        runs, tmp_path / "sens.csv", tmp_path / "tables", spacing_mm=SPACING, policy="worst_case"
    )
    assert set(written) == {"per_case", "md", "csv", "tex", "html"}
    assert all(p.stat().st_size > 0 for p in written.values())
    per_case = pd.read_csv(written["per_case"])
    table = build_sensitivity_table(per_case, "tiny")
    data = table.data
    assert data["variant"].tolist() == [v for v in VARIANTS if v != "empty=worst_case"] * 2  # two cells
    assert data["method"].tolist()[:6] == ["supervised"] * 6 and data["method"].tolist()[-1] == "ua_mt"
    sup = data[(data["method"] == "supervised")].set_index("variant")
    assert sup.loc["lcc", "dice_mean"] == pytest.approx(100.0)
    assert sup.loc["lcc", "hd95_delta"] == pytest.approx(-sup.loc["primary", "hd95_mean"])
    assert math.isnan(sup.loc["mm", "hd95_delta"])  # another unit: no Δ
    ua = data[data["method"] == "ua_mt"].set_index("variant")
    assert ua.loc["primary", "n_empty_pred"] == 1
    # one of the two cases is empty: its worst-case diagonal becomes 0 (reference_zero) or leaves the mean (nan)
    assert ua.loc["empty=reference_zero", "hd95_delta"] < 0 and ua.loc["empty=nan", "hd95_delta"] < 0
    first = table.rows[0]
    assert [first[0].value, first[2].value, first[4].value] == ["supervised (lower bound)", "primary", "–"]
    assert table.rows[1][0].value == "" and table.rows[1][2].value.startswith("empty prediction → ")
    md = written["md"].read_text(encoding="utf-8")
    assert "largest connected component" in md and "95HD = max of directions" in md


def test_refuses_a_label_file_changed_after_preparation(tmp_path, tiny_dataset):
    """The ground truth comes from the prepared dataset only: a changed test case file is named, never evaluated."""
    import re
    import shutil

    from harness.data.download import DataError

    root = Path(shutil.copytree(tiny_dataset, tmp_path / "data"))
    runs = [write_run(tmp_path, root, "supervised", 2, 1, lambda i, gt: gt)]
    assert len(sensitivity_per_case(runs, spacing_mm=SPACING, policy="nan")) > 0
    prepared = PreparedData.open(root, "la_h5")
    path = prepared.path(prepared.test_ids[1])
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF  # one byte flipped, size kept
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} changed after the data was prepared"):
        sensitivity_per_case(runs, spacing_mm=SPACING, policy="nan")
