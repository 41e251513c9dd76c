"""Cost estimate: per-method unit cost from benchmark files, scaled by iterations and step work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.run.method_table import read_methods
from harness.workflow.cost_estimate import estimate, estimate_text, step_work, unit_costs

METHODS = read_methods(Path(__file__).resolve().parents[2])


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
