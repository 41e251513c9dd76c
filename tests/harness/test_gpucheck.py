"""`python -m harness gpu-check --quick` (the report's schema, every method and stage, the tables, k runs measured
with k processes, n/a without CUDA) and the pieces a CPU can check: the time budget, the projection arithmetic,
worker failures, and the --data comparison run on the CPU as both "devices"."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.gpucheck.compare import compare_config, compare_devices, compare_losses, train_losses, window_means
from harness.gpucheck.concurrency import concurrency, worker_spec
from harness.gpucheck.projection import load_grid, predict_hours, project, selection_hours, step_unit_costs
from harness.gpucheck.report import projection_section, render
from harness.gpucheck.run import Clock, measure_steps
from harness.gpucheck.settings import FP32, NO_CUDA, VARIANTS, quick_settings
from harness.gpucheck.steps import StepCase, step_cases
from harness.method.registry import get_method, list_methods
from harness.workflow.cost_estimate import step_work
from harness.workflow.grid import grid_cells

REPO = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[dict, str, str]:
    """One `gpu-check --quick` run as the CLI runs it: (gpu_check.json, gpu_check.md, stdout)."""
    out = tmp_path_factory.mktemp("gpu_check")
    res = subprocess.run(
        [sys.executable, "-m", "harness", "gpu-check", "--quick", "--out", str(out), "--budget-s", "600"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text(), res.stdout


def test_report_has_every_section_and_key(quick):
    report, _, _ = quick
    assert report["format"] == "harness.gpu_check/1" and report["mode"] == "quick"
    expected = {
        "format",
        "mode",
        "grid",
        "grid_variant",
        "device",
        "settings",
        "steps",
        "loader",
        "sliding_window",
        "concurrency",
        "projection",
        "seconds",
        "provenance",
        "pid",
    }
    assert set(report) == expected
    assert {"name", "memory_gib", "driver", "torch", "cuda_build", "cudnn"} <= set(report["device"])
    assert report["device"]["torch"] == torch.__version__ and "git_commit" in report["provenance"]
    step_keys = {"method", "stage", "dataset", "patch", "variant", "amp", "tf32", "channels_last", "compile", "status"}
    assert all(step_keys <= set(r) for r in report["steps"])
    assert all({"median_step_s", "peak_memory_mb", "samples"} <= set(r) for r in report["steps"] if r["status"] == "ok")


def test_every_method_and_stage_is_measured_on_every_dataset(quick):
    report, _, _ = quick
    measured = {
        (r["dataset"], r["method"], r["stage"])
        for r in report["steps"]
        if r["variant"] == "fp32" and not r["compile"] and r["status"] == "ok"
    }
    jobs = {(m, s) for m in list_methods() for s in (*get_method(m).stage_names(), "train")}
    assert ("sup_local_contrast", "stage1") in jobs and ("sup_local_contrast", "stage2") in jobs
    assert measured == {(ds, m, s) for ds in ("la", "pancreas") for m, s in jobs}
    variants = {r["variant"] for r in report["steps"] if r["method"] == "supervised" and r["status"] == "ok"}
    assert variants == {v.name for v in VARIANTS}  # fp32, tf32, bf16, each with and without channels_last_3d
    compiled = [r for r in report["steps"] if r["compile"]]
    assert len(compiled) == len(jobs) * 2 and all(r["status"] != "ok" or r["compile_s"] > 0 for r in compiled)
    assert compiled[0]["status"] == "ok" or compiled[0]["status"].startswith("not compiled within")


def test_without_cuda_the_gpu_figures_say_so(quick):
    report, _, _ = quick
    assert report["device"]["name"] == report["device"]["driver"] == report["device"]["memory_gib"] == NO_CUDA
    assert {r["peak_memory_mb"] for r in report["steps"] if r["status"] == "ok"} == {NO_CUDA}
    projection = report["projection"]
    assert projection["train_hours"] == projection["sequential_hours"] == projection["selection_hours"] == NO_CUDA
    assert {r["wall_hours"] for r in projection["rows"]} == {NO_CUDA}
    assert {(r["gpus"], r["k"]) for r in projection["rows"]} == {(g, k) for g in (1, 2) for k in (1, 2, 3)}


def test_k_runs_are_measured_with_k_processes(quick):
    report, _, _ = quick
    rows = report["concurrency"]["rows"]
    assert [r["k"] for r in rows] == [1, 2, 3] and all(r["status"] == "ok" for r in rows)
    pids = [p["pid"] for r in rows for p in r["processes"]]
    assert [len(r["processes"]) for r in rows] == [1, 2, 3]
    assert len(set(pids)) == 6 and report["pid"] not in pids  # six worker processes, none of them the check itself
    for r in rows:
        assert all(p["steps"] > 0 and p["seconds"] > 0 for p in r["processes"])
        assert r["aggregate_steps_per_s"] == pytest.approx(sum(p["steps"] / p["seconds"] for p in r["processes"]))
    assert rows[0]["speedup_vs_1"] == 1.0


def test_loader_and_sliding_window_are_measured(quick):
    report, _, _ = quick
    loaders = {r["method"]: r for r in report["loader"]}
    assert loaders["dtc"]["sdf"] is True and loaders["supervised"]["sdf"] is False
    assert all(r["samples_per_s"] > 0 and r["bottleneck"] in ("loader", "step") for r in loaders.values())
    assert all(r["workers"] == 4 for r in loaders.values())  # the grid's compute.loader_workers (config.yaml)
    sliding = {r["dataset"]: r for r in report["sliding_window"]}
    assert set(sliding) == {"la", "pancreas"} and all(r["seconds_per_case"] > 0 for r in sliding.values())


def test_the_tables_render_and_are_printed(quick):
    report, markdown, stdout = quick
    assert markdown == render(report) and markdown in stdout
    assert markdown.startswith("# GPU check (quick")
    for heading in ("## Training steps", "## Data loader", "## Sliding window", "## k runs sharing", "## Projected"):
        assert heading in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| la |") or line.startswith("| pancreas |")]
    for method in list_methods():
        assert any(f"| {method} |" in row for row in rows), method
    assert "| la | sup_local_contrast/stage1 |" in markdown and "n/a (no CUDA)" in markdown


def test_a_spent_budget_skips_and_says_why():
    settings = quick_settings()
    cases = step_cases(settings)[:2]
    spent = Clock(budget_s=1.0, start=time.monotonic() - 5)
    rows = measure_steps(cases, [FP32], settings, CPU, spent, every_method=True)
    assert [r["status"] for r in rows] == ["skipped: time budget of 50 s spent"] * 2
    rows = measure_steps(cases, [VARIANTS[1]], settings, CPU, Clock(600.0, time.monotonic()))
    assert {r["status"] for r in rows if r["method"] != "supervised"} == {
        "skipped: --quick measures every variant of supervised only"
    }


def step_row(method: str, stage: str, dataset: str, seconds: float, patch=(112, 112, 80)) -> dict:
    return {
        "method": method,
        "stage": stage,
        "dataset": dataset,
        "patch": list(patch),
        "variant": "fp32",
        "compile": False,
        "status": "ok",
        "median_step_s": seconds,
    }


def test_projection_scales_measured_steps_through_the_grid_cost_estimate():
    grid = load_grid(REPO / "config" / "config.yaml")
    methods = [(m, s) for m in list_methods() for s in (*get_method(m).stage_names(), "train")]
    steps = [
        step_row(m, s, ds, 0.5, p) for m, s in methods for ds, p in (("la", (112, 112, 80)), ("pancreas", (96, 96, 96)))
    ]
    units = step_unit_costs(steps + [{**steps[0], "status": "error: oom"}], "fp32", 16)
    assert units["supervised"] == pytest.approx(
        (0.5 / step_work((112, 112, 80), 16) + 0.5 / step_work((96, 96, 96), 16)) / 2
    )
    cells = grid_cells(grid)
    predict_h = predict_hours(grid, {"la": 30.0, "pancreas": 60.0}, {"la": 20, "pancreas": 20})
    expected_predict = sum((30.0 if c.dataset == "la" else 60.0) * 20 for c in cells) / 3600
    assert predict_h == pytest.approx(expected_predict)
    result = project(grid, units, {1: 1.0, 2: 1.6}, predict_h)
    assert result["unmeasured"] == [] and result["runs"] == len(cells) == 126
    assert result["sequential_hours"] == pytest.approx(result["train_hours"] + predict_h)
    walls = {(r["gpus"], r["k"]): r["wall_hours"] for r in result["rows"]}
    assert walls[(1, 1)] == pytest.approx(result["sequential_hours"])
    assert walls[(2, 2)] == pytest.approx(result["sequential_hours"] / (2 * 1.6))
    doubled = project(grid, {k: 2 * v for k, v in units.items()}, {1: 1.0}, 0.0)
    assert doubled["train_hours"] == pytest.approx(2 * result["train_hours"])


def test_projection_adds_the_evaluations_during_training_of_every_run():
    """Selection `val` every 500 steps and the audit every 1000 (at each validation too): each run's passes over its
    own iterations (simcvd: 3000 here; the three newest methods' 15000), × (validation cases, test cases) × the
    dataset's seconds per case."""
    grid = load_grid(REPO / "config" / "config.yaml")
    seconds, tests = {"la": 30.0, "pancreas": 60.0}, {"la": 20, "pancreas": 20}
    assert selection_hours(grid, seconds, tests) == 0.0  # the paper grid evaluates nothing while it trains
    grid["protocol"] |= {"selection": "val", "val_every": 500}
    grid["report"] = {**grid.get("report", {}), "selection_audit": {"every": 1000}}
    grid["data"]["la"]["val"], grid["data"]["pancreas"]["val"] = {"count": 8}, {"count": 6}
    grid["method_overrides"]["simcvd"]["protocol"]["iterations"] = 3000
    val_cases = {"la": 8, "pancreas": 6}
    expected = 0.0
    for c in grid_cells(grid):
        iterations = {"simcvd": 3000, "mcnet_plus": 15000, "bcp": 15000, "ad_mt": 15000}.get(c.method, 6000)
        passes = iterations // 500  # validation passes = test passes (1000 is a multiple of 500)
        expected += passes * (val_cases[c.dataset] + 20) * seconds[c.dataset]
    selection_h = selection_hours(grid, seconds, tests)
    assert selection_h == pytest.approx(expected / 3600)
    units = {"supervised": 1e-9}
    result = project(grid, units, {1: 1.0}, 0.5, selection_h=selection_h)
    assert result["selection_hours"] == selection_h
    assert result["sequential_hours"] == pytest.approx(result["train_hours"] + 0.5 + selection_h)
    text = "\n".join(projection_section(result, "config.yaml"))
    assert f"selection and audit evaluations {selection_h:.1f} h" in text


def test_a_failing_worker_is_reported_not_fatal():
    settings = quick_settings()
    spec = worker_spec("throughput", StepCase("no_such_method", None, settings.datasets[0]), settings, FP32, "cpu")
    rows = concurrency(spec, dataclasses.replace(settings, k_values=(1,)), ready_timeout=120)
    assert len(rows) == 1 and rows[0]["status"].startswith("error: the worker exited")
    assert "no_such_method" in rows[0]["status"]  # the worker's own error line


def test_loss_comparison_logic():
    curve = [1.0 - 0.01 * i for i in range(60)]
    assert window_means([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.5, 3.5, 5.0]
    same = compare_losses(curve, list(curve), window=20, rtol=0.1)
    assert same["passed"] and same["max_relative_difference"] == 0.0 and len(same["reference_means"]) == 3
    drifted = curve[:40] + [v * 1.3 for v in curve[40:]]  # the last window 30 % higher
    worse = compare_losses(curve, drifted, window=20, rtol=0.1)
    assert not worse["passed"] and worse["relative_differences"][:2] == [0.0, 0.0]
    assert worse["max_relative_difference"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="different or zero length"):
        compare_losses(curve, curve[:-1])


def test_device_comparison_runs_the_real_loop_on_both_devices(tiny_dataset, tmp_path):
    cfg = compare_config(tiny_dataset, iterations=4, n_labeled=2, patch=(16, 16, 16), n_filters=2)
    result = compare_devices(cfg, tmp_path, (CPU, CPU), window=2, rtol=1e-9)
    assert result["passed"] and result["max_relative_difference"] == 0.0  # one device twice: identical curves
    assert result["devices"] == ["cpu", "cpu"] and len(result["reference_means"]) == 2
    assert (tmp_path / "cpu" / "model.pt").exists()  # the real loop wrote its outputs
    other = compare_config(tiny_dataset, iterations=4, n_labeled=2, patch=(16, 16, 16), n_filters=2, seed=7)
    reference = [json.loads(line)["loss"] for line in (tmp_path / "cpu" / "train_log.jsonl").read_text().splitlines()]
    assert not compare_losses(reference, train_losses(other, tmp_path / "seed7", CPU), window=2, rtol=1e-9)["passed"]
