"""Cost estimate: per-method unit cost from benchmark files, scaled by iterations and step work."""

from __future__ import annotations

import pytest
import yaml

from harness.costs import describe, estimate, step_work, unit_costs


def fake_run(root, method, seconds, iterations=100, patch=(32, 32, 32), n_filters=8, seed=1):
    run = root / "runs" / "synthetic" / method / "labeled~2" / f"seed~{seed}"
    (run / "benchmarks").mkdir(parents=True)
    cfg = {"method": method, "data": {"patch_size": list(patch)}, "protocol": {"iterations": iterations,
           "n_filters": n_filters}}  # fmt: skip
    (run / "run_config.yaml").write_text(yaml.safe_dump(cfg))
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
    est = estimate(config, units)
    one_run_h = 1e-9 * 6000 * 112 * 112 * 80 * 256 / 3600
    # supervised: labeled~8 x 2 seeds + upper bound x 2 seeds = 4 runs; simcvd was never measured
    assert est["hours_per_method"]["supervised"] == pytest.approx(4 * one_run_h)
    assert est["unmeasured"] == ["simcvd"]
    text = describe(est, tmp_path)
    assert text.startswith("ESTIMATE (not a measurement)") and "simcvd" in text
