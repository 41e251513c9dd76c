"""Prediction and evaluation refuse inputs of another model, data or voxel size, and record their settings."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from harness.data.download import DataError
from harness.evaluate.predict import predict_cases
from harness.evaluate.score import evaluate_cases, write_results
from harness.provenance import file_sha256
from harness.run.lineage import LineageError
from harness.train.loop import train

CPU = torch.device("cpu")
SPACING = (1.0, 1.0, 2.0)


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A trained tiny run on its own copy of the data: (config, run folder, run_info)."""
    from test_loop import run_config

    work = tmp_path_factory.mktemp("evaluate")
    root = Path(shutil.copytree(tiny_dataset, work / "data"))
    cfg = run_config(root, iterations=2)
    info = train(cfg, work / "run", device=CPU)
    return cfg, work / "run", info


def predict(cfg, run: Path, out: Path, stride=(8, 8, 8)) -> dict:
    return predict_cases(cfg, run / "model.pt", out, stride=stride, windows_per_batch=3, spacing_mm=SPACING, device=CPU)


def test_predictions_record_their_model_data_and_settings(trained, tmp_path):
    cfg, run, info = trained
    record = predict(cfg, run, tmp_path / "pred")
    on_disk = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert on_disk == record
    assert record["model_sha256"] == file_sha256(run / "model.pt") == info["model_sha256"]
    assert record["data_manifest_sha256"] == info["data_manifest_sha256"]
    assert record["settings"]["stride"] == [8, 8, 8] and record["settings"]["windows_per_batch"] == 3
    assert record["cases"] == (Path(cfg.data.root) / "test.list").read_text().split()
    assert 0 < record["sliding_window_s"] < 60  # the cost estimate's per-window seconds (no start-up)


def test_metrics_rows_carry_settings_and_hashes(trained, tmp_path):
    cfg, run, info = trained
    predict(cfg, run, tmp_path / "pred", stride=(16, 16, 8))
    rows = evaluate_cases(cfg, tmp_path / "pred", spacing_mm=SPACING, empty_pred="nan", run_info=info)
    assert {r["stride"] for r in rows} == {"16x16x8"} and {r["windows_per_batch"] for r in rows} == {3}
    assert {r["model_sha256"] for r in rows} == {info["model_sha256"]}
    assert {r["data_sha256"] for r in rows} == {info["data_manifest_sha256"]}
    assert {r["code_sha256"] for r in rows} == {info["code_sha256"]}
    write_results(rows, tmp_path / "m.csv", tmp_path / "m.json", info, {"stride": [16, 16, 8]})
    assert next(csv.DictReader((tmp_path / "m.csv").open()))["stride"] == "16x16x8"


def test_predictions_of_another_model_are_refused(trained, tmp_path):
    cfg, run, info = trained
    predict(cfg, run, tmp_path / "pred")
    retrained = {**info, "model_sha256": "0" * 64}  # run_info of a model trained since (the job was killed after)
    with pytest.raises(LineageError, match="comes from another model.pt"):
        evaluate_cases(cfg, tmp_path / "pred", spacing_mm=SPACING, empty_pred="nan", run_info=retrained)
    with pytest.raises(LineageError, match="voxel size"):
        evaluate_cases(cfg, tmp_path / "pred", spacing_mm=(1.0, 1.0, 1.0), empty_pred="nan", run_info=info)
    (tmp_path / "pred" / "predictions.json").unlink()
    with pytest.raises(LineageError, match="predictions.json is missing"):
        evaluate_cases(cfg, tmp_path / "pred", spacing_mm=SPACING, empty_pred="nan", run_info=info)


def test_model_trained_on_other_data_is_not_used_for_prediction(tiny_dataset, tmp_path):
    from test_loop import run_config

    from harness.data.synthetic import write_synthetic_la

    root = Path(shutil.copytree(tiny_dataset, tmp_path / "data"))
    cfg = run_config(root, iterations=1)
    train(cfg, tmp_path / "run", device=CPU)
    write_synthetic_la(root, n_train=4, n_test=2, seed=99, shape_xy=((36, 40), (34, 38)), shape_z=20)
    with pytest.raises(LineageError, match="trained on another version"):
        predict(cfg, tmp_path / "run", tmp_path / "pred")
    assert not (tmp_path / "pred").exists()


def with_root(cfg, root: Path):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(root)))


def test_unsafe_test_id_never_becomes_a_path(trained, tmp_path):
    cfg, run, _ = trained
    root = Path(shutil.copytree(cfg.data.root, tmp_path / "data"))
    ids = (root / "test.list").read_text().split()
    (root / "test.list").write_text("\n".join([*ids, "../../../../x"]) + "\n")
    other = with_root(cfg, root)
    with pytest.raises(DataError, match=r"'\.\./\.\./\.\./\.\./x'"):
        predict(other, run, tmp_path / "a" / "b" / "c" / "d" / "pred")
    assert not list(tmp_path.glob("x*")) and not (tmp_path / "a").exists()


def test_test_case_copied_into_train_list_is_refused(trained, tmp_path):
    cfg, _, _ = trained
    root = Path(shutil.copytree(cfg.data.root, tmp_path / "data"))
    train_ids, test_ids = (root / "train.list").read_text().split(), (root / "test.list").read_text().split()
    (root / "train.list").write_text("\n".join([*train_ids[:-1], test_ids[0]]) + "\n")
    other = with_root(cfg, root)
    with pytest.raises(DataError, match="train.list changed after the data was prepared"):
        train(other, tmp_path / "run", device=CPU)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_mm_metrics_use_the_voxel_size_the_prepared_data_records(tmp_path):
    """A case_h5 dataset (source nifti) at 1.0 × 1.2 × 2.5 mm: a 6³ cube predicted one voxel too high in z has HD95
    1 voxel = 2.5 mm (the shifted faces are more than 5 % of the surface voxels), taken from manifest.json."""
    import h5py
    import numpy as np

    from harness.data.download import sha256_file, write_list
    from harness.data.prepared import PreparedData
    from harness.evaluate.predictions import make_record, save_nifti, write_record
    from harness.io import write_json_atomic

    root = tmp_path / "data"
    label = np.zeros((20, 20, 20), np.uint8)
    label[7:13, 7:13, 7:13] = 1
    ids = {"case_a": "train", "case_b": "train", "case_t": "test"}
    for case in ids:
        (root / "cases").mkdir(parents=True, exist_ok=True)
        with h5py.File(root / "cases" / f"{case}.h5", "w") as f:
            f["image"], f["label"] = label.astype(np.float32), label
    write_list(root / "train.list", ["case_a", "case_b"])
    write_list(root / "test.list", ["case_t"])
    cases = {c: {"split": s, "sha256": sha256_file(root / "cases" / f"{c}.h5")} for c, s in ids.items()}
    lists = {n: sha256_file(root / n) for n in ("train.list", "test.list")}
    write_json_atomic(
        root / "manifest.json", {"format": "case_h5", "lists": lists, "cases": cases, "spacing_mm": [1.0, 1.2, 2.5]}
    )
    data = PreparedData.open(root, "case_h5")
    assert data.spacing_mm == (1.0, 1.2, 2.5)
    from test_loop import run_config

    cfg = run_config(root)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, format="case_h5", source="nifti", n_train=2))
    pred = np.roll(label, 1, axis=2)
    (tmp_path / "pred").mkdir()
    save_nifti(pred, data.spacing_mm, tmp_path / "pred" / "case_t.nii.gz")
    settings = {"stride": [8, 8, 8], "windows_per_batch": 1, "spacing_mm": list(data.spacing_mm)}
    info = {
        "model_sha256": "m" * 64,
        "config_sha256": cfg.sha256(),
        "code_sha256": "c" * 64,
        "method_version": 1,
        "git_commit": "x",
    }
    write_record(
        tmp_path / "pred", make_record(model_sha256="m" * 64, config_sha256=cfg.sha256(), data=data, settings=settings)
    )
    [row] = evaluate_cases(cfg, tmp_path / "pred", spacing_mm=None, empty_pred="nan", run_info=info)
    assert row["hd95"] == pytest.approx(1.0) and row["hd95_mm"] == pytest.approx(2.5)
    assert row["dice"] == pytest.approx(2 * 5 * 36 / (2 * 6 * 36))  # 5 of the 6 slices overlap
