"""Cost estimate: per-method unit cost from benchmark files, scaled by iterations and step work."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from harness.run.method_table import read_methods
from harness.workflow.cost_estimate import (
    axis_windows,
    case_shapes,
    case_windows,
    dataset_windows,
    estimate,
    estimate_text,
    evaluation_passes,
    step_work,
    unit_costs,
    window_unit_costs,
)

REPO = Path(__file__).resolve().parents[2]
METHODS = read_methods(REPO)


def fake_run(root, method, seconds, iterations=100, patch=(32, 32, 32), n_filters=8, seed=1):
    run = root / "runs" / "synthetic" / method / "labeled~2" / f"seed~{seed}"
    (run / "benchmarks").mkdir(parents=True)
    cfg = {
        "method": method,
        "data": {"patch_size": list(patch)},
        "protocol": {"iterations": iterations, "n_filters": n_filters},
    }
    (run / "run_config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "run_info.json").write_text(json.dumps({"iterations": iterations}))
    (run / "benchmarks" / "train.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:10\t100\n")


def test_step_work():
    assert step_work((112, 112, 80), 16) == 112 * 112 * 80 * 256


def test_unit_costs_average_over_runs(tmp_path):
    fake_run(tmp_path, "supervised", 10.0, seed=1)
    fake_run(tmp_path, "supervised", 30.0, seed=2)
    fake_run(tmp_path, "ua_mt", 50.0)
    units = unit_costs(tmp_path)
    work = 100 * 32**3 * 64
    assert units["supervised"] == pytest.approx(20.0 / work)  # mean of 10 s and 30 s
    assert units["ua_mt"] == pytest.approx(50.0 / work)


def test_estimate_scales_to_the_target_grid(tmp_path):
    units = {"supervised": 1e-9}
    config = {
        "seeds": [1, 2],
        "methods": ["supervised", "simcvd"],
        "datasets": {"la": {"labeled": [8]}},
        "data": {"la": {"n_train": 80, "patch_size": [112, 112, 80]}},
        "protocol": {"iterations": 6000, "n_filters": 16},
    }
    est = estimate(config, units, METHODS)
    one_run_h = 1e-9 * 6000 * 112 * 112 * 80 * 256 / 3600
    # supervised: labeled~8 x 2 seeds + upper bound x 2 seeds = 4 runs; simcvd was never measured
    assert est["hours_per_method"]["supervised"] == pytest.approx(4 * one_run_h)
    assert est["unmeasured"] == ["simcvd"]
    text = estimate_text(est, tmp_path)
    assert text.startswith("ESTIMATE (not a measurement)") and "simcvd" in text


def test_pretraining_stages_have_their_own_unit_cost_and_count_towards_their_method(tmp_path):
    fake_run(tmp_path, "sup_local_contrast", 20.0)  # fine-tuning: 100 iterations
    run = tmp_path / "runs" / "synthetic" / "sup_local_contrast" / "labeled~2" / "seed~1"
    for stage, iterations in (("stage1", 40), ("stage2", 50)):  # each stage's run_info.json records its iterations
        (run / stage).mkdir()
        (run / stage / "run_info.json").write_text(json.dumps({"iterations": iterations}))
    (run / "benchmarks" / "pretrain_stage1.tsv").write_text("s\tmax_rss\n8.0\t100\n")
    (run / "benchmarks" / "pretrain_stage2.tsv").write_text("s\tmax_rss\n5.0\t100\n")
    units = unit_costs(tmp_path)
    work = 32**3 * 64
    assert units["sup_local_contrast/stage1"] == pytest.approx(8.0 / (40 * work))
    assert units["sup_local_contrast/stage2"] == pytest.approx(5.0 / (50 * work))
    config = {
        "seeds": [1],
        "methods": ["sup_local_contrast"],
        "datasets": {"la": {"labeled": [8], "upper_bound": False}},
        "data": {"la": {"n_train": 80, "patch_size": [32, 32, 32]}},
        "protocol": {"iterations": 200, "n_filters": 8},
        "method_overrides": {"sup_local_contrast": {"stage1": {"iterations": 400}}},  # stage2: default 2000
    }
    hours = estimate(config, units, METHODS)["hours_per_method"]["sup_local_contrast"]
    assert hours == pytest.approx((20.0 * 2 + 8.0 * 10 + 5.0 * 40) / 3600)


# -- per-run protocol: iterations and batch size --------------------------------------------------------------------
def one_dataset_config(methods, **extra):
    return {
        "seeds": [1],
        "methods": methods,
        "datasets": {"la": {"labeled": [8], "upper_bound": False}},
        "data": {"la": {"source": "released_h5", "n_train": 80, "patch_size": [112, 112, 80], "stride": [18, 18, 4]}},
        "protocol": {"iterations": 6000, "n_filters": 16},
        "eval": {"windows_per_batch": 4},
        **extra,
    }


def test_each_run_is_scaled_with_its_own_iterations():
    """mcnet_plus trains 15000 iterations (method_overrides.mcnet_plus.protocol), the others the protocol's 6000."""
    config = one_dataset_config(
        ["supervised", "mcnet_plus"], method_overrides={"mcnet_plus": {"protocol": {"iterations": 15000}}}
    )
    hours = estimate(config, {"supervised": 1e-9, "mcnet_plus": 1e-9}, METHODS)["hours_per_method"]
    assert hours["supervised"] == pytest.approx(1e-9 * 6000 * step_work((112, 112, 80), 16) / 3600)
    assert hours["mcnet_plus"] == pytest.approx(hours["supervised"] * 15000 / 6000)


def test_batch_size_scales_the_step_work_measured_and_estimated(tmp_path):
    assert step_work((112, 112, 80), 16, 8) == 2 * step_work((112, 112, 80), 16)
    assert step_work((112, 112, 80), 16, 2) == step_work((112, 112, 80), 16) / 2
    fake_run(tmp_path, "supervised", 40.0)  # batch 4 (the default)
    fake_run(tmp_path, "bcp", 40.0)
    cfg_path = tmp_path / "runs" / "synthetic" / "bcp" / "labeled~2" / "seed~1" / "run_config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["protocol"]["batch_size"] = 8
    cfg_path.write_text(yaml.safe_dump(cfg))
    units = unit_costs(tmp_path)
    assert units["bcp"] == pytest.approx(units["supervised"] / 2)  # same seconds for twice the samples
    config = one_dataset_config(
        ["supervised", "bcp"], method_overrides={"bcp": {"protocol": {"batch_size": 8, "labeled_bs": 4}}}
    )
    hours = estimate(config, {"supervised": 1e-9, "bcp": 1e-9}, METHODS)["hours_per_method"]
    assert hours["bcp"] == pytest.approx(2 * hours["supervised"])


# -- evaluations during training ------------------------------------------------------------------------------------
@pytest.mark.parametrize("iterations", [1, 7, 60, 100, 1000, 6000])
def test_evaluation_passes_are_those_the_monitor_schedules(iterations):
    from harness.config import SelectionConfig
    from harness.train.monitor import Monitor

    for val_every in (0, 1, 3, 7, 40, 200, 1000, 7000):
        for audit_every in (0, 1, 2, 3, 30, 40, 500, 1000, 7000):
            sel = SelectionConfig(mode="val" if val_every else "last", val_every=val_every, audit_every=audit_every)
            val = [("v", None, None)] if val_every else []  # as harness.train.loop.make_monitor builds them
            test = [("t", None, None)] if audit_every else []
            monitor = Monitor(SimpleNamespace(selection=sel), Path("unused"), val, test, device=None)
            due = [monitor.due(done, done == iterations) for done in range(1, iterations + 1)]
            expected = (sum(v for v, _ in due), sum(t for _, t in due))
            assert evaluation_passes(iterations, val_every, audit_every) == expected, (val_every, audit_every)


def test_window_counts_match_the_sliding_window():
    from harness.evaluate.inference import count_windows, window_starts

    for patch in (1, 5, 16, 17, 80):
        for stride in {s for s in (1, 2, 3, patch // 2, patch - 1, patch) if 1 <= s <= patch}:
            for size in range(1, 2 * patch + 40):
                assert axis_windows(size, patch, stride) == len(window_starts(size, patch, stride)), (size, patch)
    for shape in ((190, 135, 88), (60, 50, 10), (112, 112, 80), (113, 111, 81), (20, 300, 97)):
        assert case_windows(shape, (112, 112, 80), (18, 18, 4)) == count_windows(shape, (112, 112, 80), (18, 18, 4))
        assert case_windows(shape, (96, 96, 96), (16, 16, 16)) == count_windows(shape, (96, 96, 96), (16, 16, 16))


def write_manifest(resources, dataset, cases):
    (resources / dataset).mkdir(parents=True)
    entries = {cid: {"split": split, "shape": list(shape), "sha256": "0"} for cid, (split, shape) in cases.items()}
    (resources / dataset / "manifest.json").write_text(json.dumps({"lists": {}, "cases": entries}))


def fake_predict(results, resources, seconds=18.0):
    """A measured predict job of the smoke dataset: 32×32×16 windows, stride 16/16/8, n_filters 8, two test cases of
    8 and 1 windows (and a training case it never predicted)."""
    fake_run(results, "supervised", 10.0, patch=(32, 32, 16))
    run = results / "runs" / "synthetic" / "supervised" / "labeled~2" / "seed~1"
    (run / "benchmarks" / "predict.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:18\t100\n")
    (run / "predictions").mkdir()
    settings = {"window": [32, 32, 16], "stride": [16, 16, 8], "windows_per_batch": 8, "spacing_mm": [1, 1, 1]}
    (run / "predictions" / "predictions.json").write_text(json.dumps({"cases": ["t1", "t2"], "settings": settings}))
    cases = {"t1": ("test", (40, 36, 20)), "t2": ("test", (32, 32, 16)), "c1": ("train", (64, 64, 64))}
    write_manifest(resources, "synthetic", cases)
    return seconds / (9 * 32 * 32 * 16 * 64)  # 2·2·2 + 1 windows, each 32·32·16 voxels × 8²


def test_window_unit_cost_from_the_measured_predict_jobs(tmp_path):
    unit = fake_predict(tmp_path / "results", tmp_path / "resources")
    assert window_unit_costs(tmp_path / "results", tmp_path / "resources") == {"supervised": pytest.approx(unit)}
    assert window_unit_costs(tmp_path / "results", tmp_path / "elsewhere") == {}  # shapes unknown: not guessed


def test_window_unit_cost_uses_the_sliding_window_seconds_of_the_record(tmp_path):
    """A record with `sliding_window_s` (written by `write_predictions`) is costed by it, not by the job's wall seconds
    with their start-up."""
    wall_unit = fake_predict(tmp_path / "results", tmp_path / "resources", seconds=18.0)
    record_path = tmp_path / "results/runs/synthetic/supervised/labeled~2/seed~1/predictions/predictions.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "sliding_window_s": 4.5}))
    units = window_unit_costs(tmp_path / "results", tmp_path / "resources")
    assert units == {"supervised": pytest.approx(wall_unit * 4.5 / 18.0)}


def evaluating_config(selection="val", audit_every=30):
    """A toy dataset (32×32×16 windows, stride 16/16/8) with 3 validation cases, 100 iterations, validation every
    40 steps, the audit every 30."""
    protocol = {"iterations": 100, "n_filters": 16, "selection": selection, "val_every": 40}
    return {
        "seeds": [1],
        "methods": ["supervised"],
        "datasets": {"toy": {"labeled": [2], "upper_bound": False}},
        "data": {
            "toy": {
                "source": "synthetic",
                "n_train": 12,
                "patch_size": [32, 32, 16],
                "stride": [16, 16, 8],
                "val": {"count": 3},
            }
        },
        "protocol": protocol,
        "eval": {"windows_per_batch": 4},
        "report": {"selection_audit": {"every": audit_every}},
    }


TOY_CASES = {
    "a": ("train", (64, 64, 32)),  # 3·3·3 = 27 windows
    "b": ("train", (48, 64, 32)),  # 2·3·3 = 18
    "t1": ("test", (64, 64, 32)),  # 27
    "t2": ("test", (64, 64, 32)),  # 27
}


def test_evaluation_hours_of_a_grid_with_a_val_split_and_the_audit(tmp_path):
    results, resources = tmp_path / "results", tmp_path / "resources"
    unit = fake_predict(results, resources)
    write_manifest(resources, "toy", TOY_CASES)
    config = evaluating_config()
    est = estimate(config, {"supervised": 1e-9}, METHODS, window_unit_costs(results, resources), resources)
    # validation after 40, 80, 100 steps: 3 passes × 3 cases × 22.5 windows (the mean training case);
    # test cases after 30, 40, 60, 80, 90, 100: 6 passes × 54 windows
    windows = 3 * 3 * 22.5 + 6 * 54
    eval_h = unit * windows * 32 * 32 * 16 * 16**2 / 3600
    train_h = 1e-9 * 100 * step_work((32, 32, 16), 16) / 3600
    assert est["eval_hours_per_method"]["supervised"] == pytest.approx(eval_h)
    assert est["eval_share_per_method"]["supervised"] == pytest.approx(eval_h / train_h)
    assert est["total_hours"] == pytest.approx(train_h)  # the training steps only
    text = estimate_text(est, results)
    share = f"{100 * eval_h / train_h:.0f} %"
    assert f"    selection and audit evaluations: {eval_h:.1f} h ({share} of training; goal <= 15 %)" in text
    assert text.startswith("ESTIMATE (not a measurement)")
    audit_only = estimate(
        evaluating_config(selection="last"), {"supervised": 1e-9}, METHODS, {"supervised": unit}, resources
    )
    assert audit_only["eval_hours_per_method"]["supervised"] == pytest.approx(unit * 4 * 54 * 32 * 32 * 16 * 256 / 3600)


def test_evaluations_without_known_shapes_or_measurement_are_said_not_guessed(tmp_path):
    config = evaluating_config()
    est = estimate(config, {"supervised": 1e-9}, METHODS, {"supervised": 1e-12}, tmp_path)
    assert est["eval_hours_per_method"] == {}
    assert "evaluation cost unknown for toy: prepare the data first" in estimate_text(est, tmp_path)
    write_manifest(tmp_path, "toy", TOY_CASES)
    est = estimate(config, {"supervised": 1e-9}, METHODS, {}, tmp_path)
    assert "evaluation cost not measured" in estimate_text(est, tmp_path)


def test_la_shapes_come_from_the_repository_manifest(tmp_path):
    from harness.evaluate.inference import count_windows

    with (REPO / "harness" / "data" / "manifests" / "la_manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    test = [(int(r["shape_x"]), int(r["shape_y"]), int(r["shape_z"])) for r in rows if r["split"] == "test"]
    (tmp_path / "la").mkdir()  # a prepared LA manifest records no shapes: the repository's table is used
    prepared = {"cases": {r["id"]: {"split": r["split"]} for r in rows}}
    (tmp_path / "la" / "manifest.json").write_text(json.dumps(prepared))
    shapes = case_shapes("la", "released_h5", tmp_path)
    assert len(shapes) == 100 and sorted(s for split, s in shapes.values() if split == "test") == sorted(test)
    assert case_shapes("pancreas", "tcia", tmp_path) is None
    config = one_dataset_config(["supervised"])
    windows = dataset_windows(config, "la", tmp_path)
    assert windows[1] == sum(count_windows(s, (112, 112, 80), (18, 18, 4)) for s in test)


def test_a_grid_without_evaluations_prints_what_it_printed_before(tmp_path):
    """No val split or audit: the text is exactly the training estimate (a val split without selection `val` and
    without the audit evaluates nothing either), with every evaluation measurement and shape at hand."""
    fake_predict(tmp_path / "results", tmp_path / "resources")
    write_manifest(tmp_path / "resources", "toy", TOY_CASES)
    window_units = window_unit_costs(tmp_path / "results", tmp_path / "resources")
    assert window_units
    unit = 1.5 * 3600 / (100 * step_work((32, 32, 16), 16))  # 1.5 h per run
    expected = "\n".join(
        [
            "ESTIMATE (not a measurement): training time scaled from the runs under results, on that machine:",
            "  mean_teacher: 3.0 h",
            "  supervised: 1.5 h",
            "  total: 4.5 h of sequential training on the machine of those runs",
            "  not measured (run the smoke benchmark with them first): simcvd",
        ]
    )
    plain = evaluating_config(selection="last", audit_every=0)
    del plain["data"]["toy"]["val"], plain["protocol"]["selection"], plain["protocol"]["val_every"], plain["report"]
    split_unused = evaluating_config(selection="last", audit_every=0)
    for config in (plain, split_unused):
        config["methods"] = ["supervised", "mean_teacher", "simcvd"]
        units = {"supervised": unit, "mean_teacher": 2 * unit}
        est = estimate(config, units, METHODS, window_units, tmp_path / "resources")
        assert est["eval_hours_per_method"] == {} and est["eval_notes"] == []
        assert estimate_text(est, Path("results")) == expected
