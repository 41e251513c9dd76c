"""A job's identity is what can change its numbers, and nothing else: its code by import closure, its
data, its config values and its thread count.

One real run of a two-method CI grid in a project copy; then one file of each kind is edited and the dry run must plan
exactly the jobs whose code imports it (and what is computed from their outputs), nothing more and nothing less.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from workflow_tools import REPO, copy_project, env, grid_args, planned_jobs, planned_runs, run_snakemake, snakemake

pytestmark = pytest.mark.slow
METHODS = ("supervised", "mean_teacher")
REPORT_RULES = {"aggregate", "figures", "qualitative", "sensitivity", "provenance", "landing", "cost", "all"}
EVERY_JOB = {"run_config", "train", "predict", "evaluate"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(project copy, work folder, config) after a complete run: a dry run plans nothing."""
    tmp = tmp_path_factory.mktemp("identity")
    project = copy_project(tmp / "project")
    config = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    config["methods"] = list(METHODS)
    (tmp / "c.yaml").write_text(yaml.safe_dump(config))
    work = tmp / "work"
    run_snakemake(work, tmp / "c.yaml", project=project)
    assert planned_jobs(dry(project, work, tmp / "c.yaml")) == {}
    return project, work, tmp / "c.yaml"


def dry(project: Path, work: Path, config: Path, *extra: str) -> str:
    res = run_snakemake(work, config, "-n", *extra, project=project)
    return res.stdout + res.stderr


def plan_after_edit(finished, rel: str, old: str, new: str) -> tuple[dict[str, int], set[tuple[str, str]]]:
    """The dry run's jobs after replacing `old` by `new` in the project's file `rel` (restored afterwards)."""
    project, work, config = finished
    path = project / rel
    text = path.read_text()
    assert old in text, (rel, old)
    path.write_text(text.replace(old, new, 1))
    try:
        out = dry(project, work, config)
    finally:
        path.write_text(text)
    return planned_jobs(out), planned_runs(out)


def test_a_metrics_edit_reruns_evaluation_and_the_reports_never_training(finished):
    hd95 = "np.concatenate((d_pg, d_gp)), 95)"
    jobs, runs = plan_after_edit(finished, "harness/evaluate/metrics.py", hd95, hd95.replace("95", "90"))
    assert set(jobs) == {"evaluate"} | REPORT_RULES and jobs["evaluate"] == len(METHODS)
    assert {rule for rule, _ in runs} == {"evaluate"}


def test_a_method_file_edit_reruns_that_method_only(finished):
    jobs, runs = plan_after_edit(finished, "methods/mean_teacher.py", '"""Mean Teacher', '"""Mean Teacher (edited)')
    assert runs == {(job, "mean_teacher") for job in EVERY_JOB}
    assert set(jobs) == EVERY_JOB | REPORT_RULES


def test_a_shared_training_file_edit_retrains_every_method(finished):
    jobs, runs = plan_after_edit(
        finished, "harness/train/loop.py", "logger = logging", "logger = logging  # edited\n_ = logging"
    )
    assert runs == {(job, m) for job in ("train", "predict", "evaluate") for m in METHODS}
    assert "run_config" not in jobs


def test_a_figure_edit_redraws_the_figures_only(finished):
    jobs, runs = plan_after_edit(finished, "harness/report/plots.py", "import math", "import math  # edited")
    assert runs == set() and set(jobs) == {"figures", "qualitative", "landing", "all"}  # both draw with plots.py


def test_bookkeeping_and_thread_count(finished):
    project, work, config = finished
    assert planned_jobs(dry(project, work, config, "--config", "compute={log_every: 3, checkpoint_every: 5}")) == {}
    jobs = planned_jobs(dry(project, work, config, "--config", "compute={train_threads: 1}"))
    assert jobs["run_config"] == jobs["train"] == len(METHODS)  # the thread count changes CPU numbers


def test_a_data_code_edit_prepares_the_data_again(finished):
    jobs, _ = plan_after_edit(
        finished, "harness/data/synthetic.py", "import numpy as np", "import numpy as np  # edited"
    )
    assert jobs["make_synthetic"] == 1 and jobs["train"] == len(METHODS)


def test_jobs_run_the_code_of_the_snakefiles_checkout(tmp_path):
    """A second clone run with the first clone's venv (whose editable install points to the first clone): the jobs
    import the second clone's harness, as their recorded code says."""
    from harness.cli import command_entry
    from harness.run.code import code_identity

    second = copy_project(tmp_path / "second")
    method = second / "methods" / "supervised.py"
    method.write_text(method.read_text().replace('"""supervised:', '"""supervised (second clone):', 1))
    work = tmp_path / "work"
    config = second / ".test" / "config" / "config.yaml"
    snakemake(*grid_args(work, config, "--until", "train"), project=second, environ=env(second, activated=False))
    info = yaml.safe_load(
        (tmp_path / "work" / "results/ci/runs/synthetic/supervised/labeled~2/seed~1/run_info.json").read_text()
    )
    entry, _ = command_entry("train")
    assert info["code"]["sha256"] == code_identity(entry, "supervised", root=second).sha256
    assert info["code"]["sha256"] != code_identity(entry, "supervised", root=REPO).sha256
