"""The Snakemake workflow: lint, dry runs, the refusal of unimplemented parts, a tiny end-to-end run, rerun scope."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_tools import REPO, env, planned_jobs, planned_wildcards
from workflow_tools import snakemake as run


def snakemake(*args: str, cwd: Path = REPO, check: bool = True, activated: bool = True) -> subprocess.CompletedProcess:
    """`workflow_tools.snakemake`; with `activated=False` as from a shell that never activated the venv."""
    return run(*args, cwd=cwd, check=check, environ=env(activated=activated))


def planned(res: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule from a dry run's 'Job stats' table."""
    return planned_jobs(res.stdout + res.stderr)


def test_lint_is_clean():
    res = snakemake("--lint", "--configfile", "config/smoke.yaml")
    assert "Congratulations, your workflow is in a good condition" in res.stdout + res.stderr


def test_dry_run_of_the_smoke_grid():
    import yaml

    from harness.workflow.grid import grid_cells

    jobs = planned(snakemake("-n", "--configfile", "config/smoke.yaml", "--directory", "/tmp/harness-dry-smoke"))
    n_runs = len(grid_cells(yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())))
    assert n_runs >= 6
    for rule in ("run_config", "train", "predict", "evaluate"):
        assert jobs[rule] == n_runs, rule
    assert jobs["make_synthetic"] == jobs["aggregate"] == jobs["figures"] == jobs["all"] == 1


def paper_grid_counts() -> dict[str, int]:
    """Training and pre-training jobs the paper grid must plan (from the config, not hard-coded)."""
    import yaml

    from harness.run.method_table import read_methods
    from harness.workflow.grid import grid_cells

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cells = grid_cells(config)
    counts = {"train": len(cells)}
    for c in cells:
        entry = read_methods(REPO)[c.method]
        for stage in entry.stages:
            if stage in entry.shared_stages and c.n_labeled != min(config["datasets"][c.dataset]["labeled"]):
                continue  # a label-free stage runs once per dataset and seed
            counts[f"pretrain_{stage}"] = counts.get(f"pretrain_{stage}", 0) + 1
    return counts


def trained_runs(res: subprocess.CompletedProcess) -> set[tuple[str, str, int, int]]:
    """(dataset, method, labeled count, seed) of every planned `train` job."""
    return {
        (w["dataset"], w["method"], int(w["n"]), int(w["seed"]))
        for rule, w in planned_wildcards(res.stdout + res.stderr)
        if rule == "train"
    }


def test_default_config_is_the_paper_grid_with_every_method_and_stage(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    res = snakemake("-n", cwd=tmp_path)  # no --configfile: config/config.yaml of the workdir
    jobs, expected = planned(res), paper_grid_counts()
    # 10 methods, LA 8/16 + Pancreas 6/12, 3 seeds, + the upper bounds; sup_local_contrast: stage 1 once per dataset
    # and seed (no labels), stage 2 per run; bcp: its labeled-only pre-training per run
    assert expected == {"train": 126, "pretrain_stage1": 6, "pretrain_stage2": 12, "pretrain_pretrain": 12}
    assert {k: jobs[k] for k in expected} == expected
    assert jobs["evaluate"] == expected["train"] and jobs["fetch_la_case"] == 100
    counts = {"la": (8, 16), "pancreas": (6, 12)}
    new = {(ds, m, n, s) for ds in counts for m in ("mcnet_plus", "bcp", "ad_mt") for n in counts[ds] for s in SEEDS}
    assert new <= trained_runs(res)


SEEDS = (1337, 1338, 1339)


def test_the_selection_audit_config_plans_the_la_grid_with_a_val_split_and_the_audit(tmp_path):
    config = yaml.safe_load((REPO / "config" / "selection_audit.yaml").read_text())
    assert config["data"]["la"]["val"] and config["protocol"]["selection"] == "val"
    assert config["report"]["selection_audit"]["every"] > 0
    res = snakemake("-n", "--configfile", str(REPO / "config" / "selection_audit.yaml"), "--directory", str(tmp_path))
    methods = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["methods"]
    assert config["methods"] == methods  # every method of the paper grid
    expected = {("la", m, n, s) for m in methods for n in (8, 16) for s in SEEDS}
    n_trainable = 80 - config["data"]["la"]["val"]["count"]  # the upper bound trains on the cases left for training
    expected |= {("la", "supervised", n_trainable, s) for s in SEEDS}
    assert trained_runs(res) == expected
    jobs = planned(res)
    assert jobs["selection_audit"] == 1 and jobs["evaluate"] == len(expected)


def test_unimplemented_method_is_refused_by_name(tmp_path):
    cfg = (REPO / ".test" / "config" / "config.yaml").read_text()
    (tmp_path / "new.yaml").write_text(cfg.replace("methods: [", "methods: [fancy_new_method, "))
    res = snakemake("-n", "--configfile", str(tmp_path / "new.yaml"), cwd=tmp_path, check=False)
    assert res.returncode != 0 and "methods not implemented yet: fancy_new_method" in res.stdout + res.stderr


def test_schema_rejects_unknown_keys(tmp_path):
    cfg = (REPO / ".test" / "config" / "config.yaml").read_text() + "iterations: 5\n"
    (tmp_path / "bad.yaml").write_text(cfg)
    res = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config refused: the configuration has 1 problem:\n  - top level: unknown key 'iterations'" in out
    assert "$schema" not in out and len(out.splitlines()) < 20  # harness.workflow.validate's lines, not a schema dump


@pytest.mark.slow
def test_tiny_end_to_end_and_rerun_scope(tmp_path):
    cfg = ["--configfile", str(REPO / ".test" / "config" / "config.yaml")]
    snakemake("--cores", "2", *cfg, "--directory", str(tmp_path), activated=False)
    out = tmp_path / "results" / "ci"
    for f in ("summary.json", "runs.csv", "tables/synthetic_voxel.md", "figures/dice_vs_labeled.png"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "runs/synthetic/supervised/labeled~2/seed~1/logs/train.log").exists()
    assert not list(tmp_path.rglob("*.tmp"))

    def dry(*extra: str) -> dict[str, int]:
        return planned(snakemake("-n", *cfg, "--directory", str(tmp_path), *extra))

    assert dry() == {}
    # an evaluation setting reruns evaluation only, never training
    reran = dry("--config", "eval={empty_pred: nan}")
    assert "train" not in reran and "predict" not in reran and reran["evaluate"] == 1
    # settings of a method outside this cell change nothing
    assert dry("--config", "method_overrides={ua_mt: {ema_decay: 0.9}}") == {}
    # this method's setting reruns its runs from run_config on
    jobs = dry("--config", "method_overrides={supervised: {has_dropout: false}}")
    assert jobs["run_config"] == 1 and jobs["train"] == 1 and jobs["predict"] == 1
    # a new seed adds exactly one run
    more = (REPO / ".test" / "config" / "config.yaml").read_text().replace("seeds: [1]", "seeds: [1, 2]")
    (tmp_path / "more_seeds.yaml").write_text(more)
    jobs = planned(snakemake("-n", "--configfile", str(tmp_path / "more_seeds.yaml"), "--directory", str(tmp_path)))
    assert jobs["train"] == 1 and jobs["run_config"] == 1


def test_slurm_profile_dry_run_requests_gpus_and_resources(tmp_path):
    res = snakemake(
        "-n",
        "--workflow-profile",
        str(REPO / "profiles" / "slurm"),
        "--configfile",
        str(REPO / ".test" / "config" / "config.yaml"),
        "--directory",
        str(tmp_path),
    )
    text = res.stdout + res.stderr
    train = text.split("rule train:")[1].split("\n\n")[0]
    assert "gpu=1" in train and "mem_mb=" in train and "runtime=" in train


def test_dry_run_prints_a_labelled_cost_estimate(tmp_path):
    import yaml

    run = tmp_path / "results" / "smoke" / "runs" / "synthetic" / "supervised" / "labeled~2" / "seed~1"
    (run / "benchmarks").mkdir(parents=True)
    (run / "benchmarks" / "train.tsv").write_text("s\th:m:s\n12.0\t0:00:12\n")
    (run / "run_info.json").write_text('{"iterations": 10}')
    protocol = {"iterations": 10, "n_filters": 8}
    (run / "run_config.yaml").write_text(
        yaml.safe_dump({"method": "supervised", "protocol": protocol, "data": {"patch_size": [32, 32, 32]}})
    )
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(tmp_path / "c.yaml"), "--directory", str(tmp_path))
    assert "ESTIMATE (not a measurement)" in res.stderr and "supervised:" in res.stderr


def test_label_free_stage1_is_trained_once_per_dataset_and_seed(tmp_path):
    """sup_local_contrast's stage 1 reads no labels (SHARED_STAGES): one job per dataset and seed, in the smallest
    labeled count's folder; the stage 2 of every labeled count starts from it."""
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg.update(methods=["sup_local_contrast"], seeds=[1, 2])
    cfg["data"]["synthetic"]["n_train"] = 4
    cfg["datasets"]["synthetic"]["labeled"] = [2, 3]
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(path), "--directory", str(tmp_path))
    jobs = planned(res)
    assert jobs["pretrain_stage1"] == 2 and jobs["pretrain_stage2"] == 4 and jobs["train"] == 4
    text = res.stdout + res.stderr
    stage1_outputs = re.findall(r"output: (\S+/stage1/model.pt)", text)
    assert sorted(stage1_outputs) == [
        f"results/ci/runs/synthetic/sup_local_contrast/labeled~2/seed~{s}/stage1/model.pt" for s in (1, 2)
    ]
    stage2_of_3 = re.search(r"rule pretrain_stage2:\n\s+input: ([^\n]*labeled~3/seed~1/run_config.yaml[^\n]*)", text)
    assert stage2_of_3 and "labeled~2/seed~1/stage1/model.pt" in stage2_of_3.group(1)


def test_dry_run_of_the_simcvd_ablation_config_plans_every_published_row(tmp_path):
    """config/ablation_simcvd.yaml: the base configuration, 16 distinct variants and the mean-teacher baseline row,
    × 3 seeds (the sweeps' default values are the simcvd run, not copies)."""
    res = snakemake("-n", "--configfile", str(REPO / "config" / "ablation_simcvd.yaml"), "--directory", str(tmp_path))
    jobs = planned(res)
    assert jobs["train"] == 18 * 3 and jobs["run_config"] == 54 and jobs["ablation"] == 1
    text = res.stdout + res.stderr
    assert "simcvd@head_dropout=0.1/" not in text and "simcvd@head_pool=256/labeled~8/seed~1339" in text


def pdf_texts(path: Path) -> list[str]:
    """The text strings a matplotlib PDF draws (legend entries, tick and panel labels): its content streams inflated,
    each `(..) Tj` or `[(..) kern (..)] TJ` joined."""
    texts = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", path.read_bytes(), re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:  # fonts and images, not text
            continue
        for single, kerned in re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj|\[(.*?)\]\s*TJ", content, re.S):
            parts = [single] if single else re.findall(rb"\(((?:[^()\\]|\\.)*)\)", kerned)
            texts.append(b"".join(parts).decode("latin-1"))
    return texts


@pytest.mark.slow
def test_the_newest_methods_train_predict_and_evaluate_into_every_table_figure_and_page(tmp_path):
    """MC-Net+, BCP (with its pre-training stage) and AD-MT through the DAG on the CI grid, with the selection audit:
    each is a row of every table, a label in every figure and on the report's pages."""
    new = ("mcnet_plus", "bcp", "ad_mt")
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["methods"] = ["supervised", *new]
    cfg["method_overrides"] = {"bcp": {"pretrain": {"iterations": 4}}}
    cfg["report"] = {"selection_audit": {"every": 2}}
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump(cfg))
    work = tmp_path / "w"
    res = snakemake("--cores", "2", "--configfile", str(path), "--directory", str(work))
    jobs = planned_jobs(res.stdout + res.stderr)
    assert jobs["train"] == 4 and jobs["predict"] == 4 and jobs["evaluate"] == 4 and jobs["pretrain_pretrain"] == 1
    out = work / "results" / "ci"
    for method in new:
        run = out / "runs" / "synthetic" / method / "labeled~2" / "seed~1"
        assert (run / "metrics_per_case.csv").stat().st_size > 0
    assert (out / "runs/synthetic/bcp/labeled~2/seed~1/pretrain/model.pt").exists()
    tables = sorted(out.glob("tables/*.csv"))
    expected = {"synthetic_voxel", "synthetic_mm", "synthetic_stats", "synthetic_selection_audit", "cost"}
    assert {t.stem for t in tables} >= expected
    for table in tables:
        assert set(new) <= set(pd.read_csv(table)["method"]), table
    figures = sorted(out.glob("figures/*.pdf"))
    assert {f.stem for f in figures} >= {"dice_vs_labeled", "training_curves_synthetic", "selection_audit_synthetic"}
    for figure in figures:
        labels = " ".join(pdf_texts(figure))
        assert all(method in labels for method in new), (figure.name, labels[:500])
    for page in ("landing.html", "provenance.html"):
        text = (out / "report" / page).read_text(encoding="utf-8")
        assert all(method in text for method in new), page
