"""harness.run.lineage: what a starting job invalidates, the journal, and the check that refuses stale results."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from harness.run.lineage import (
    JOURNAL,
    downstream,
    find_inconsistencies,
    new_journal,
    refusal_message,
    run_chain,
    run_problems,
    start_job,
)

STAGES = ("stage1", "stage2")


def complete_run(run: Path, stages: tuple[str, ...] = ()) -> Path:
    """Every output of every job of a run, as after a finished run (contents are placeholders)."""
    for link in run_chain(stages):
        for out in link.outputs:
            path = run / out
            path.parent.mkdir(parents=True, exist_ok=True)
            if out == "predictions":
                path.mkdir()
                (path / "case.nii.gz").write_text("p")
            elif out == JOURNAL:
                new_journal(run)
            else:
                path.write_text(out)
    return run


def test_chain_is_in_dag_order_with_stages():
    jobs = [link.job for link in run_chain(STAGES)]
    assert jobs == ["run_config", "pretrain_stage1", "pretrain_stage2", "train", "predict", "evaluate"]
    assert downstream(run_chain(), "train") == ["predictions", "metrics_per_case.csv", "metrics.json"]
    assert downstream(run_chain(STAGES), "pretrain_stage2")[:2] == ["model.pt", "run_info.json"]
    with pytest.raises(ValueError, match="not a job of this run"):
        downstream(run_chain(), "pretrain_stage1")


def test_start_job_deletes_downstream_and_leftovers_keeps_upstream(tmp_path):
    run = complete_run(tmp_path / "run", STAGES)
    (run / "model.pt").unlink()  # Snakemake deletes the job's own outputs before it starts
    (run / "model.pt.tmp").write_text("half-written by a killed attempt")
    (run / "predictions.tmp").mkdir()
    deleted = start_job(run, "train", STAGES)
    assert sorted(deleted) == sorted(
        ["predictions", "metrics_per_case.csv", "metrics.json", "model.pt.tmp", "predictions.tmp"]
    )
    for kept in ("run_config.yaml", "stage1/model.pt", "stage2/model.pt", "run_info.json"):
        assert (run / kept).exists(), kept
    assert not (run / "predictions").exists() and not (run / "model.pt.tmp").exists()


def test_every_job_start_changes_the_journal(tmp_path):
    run = complete_run(tmp_path / "run")
    before = (run / JOURNAL).read_text()
    start_job(run, "evaluate")
    once = (run / JOURNAL).read_text()
    start_job(run, "evaluate")
    twice = (run / JOURNAL).read_text()
    assert before != once != twice and once.startswith(before) and twice.startswith(once)
    assert [json.loads(line)["job"] for line in twice.splitlines()[1:]] == ["evaluate", "evaluate"]
    # the run_config job rewrites the same first line every time (no spurious reruns of the report)
    assert new_journal(run).read_text() == before


def test_complete_and_partial_runs_have_no_problem(tmp_path):
    run = complete_run(tmp_path / "run", STAGES)
    assert run_problems(run, STAGES) == []
    for out in ("metrics.json", "metrics_per_case.csv"):
        (run / out).unlink()  # a run that stopped after predict: a prefix of the chain
    assert run_problems(run, STAGES) == []
    (run / JOURNAL).unlink()  # results written before journals existed
    assert run_problems(run, STAGES) == []
    assert run_problems(tmp_path / "never_started", STAGES) == []


def test_result_that_outlived_its_model_is_a_problem(tmp_path):
    run = complete_run(tmp_path / "run")
    (run / "model.pt").unlink()
    [problem] = run_problems(run)
    assert (
        "predictions, metrics_per_case.csv, metrics.json exist but model.pt (job train) is missing" in problem.message
    )
    assert set(problem.delete) == {run / "predictions", run / "metrics_per_case.csv", run / "metrics.json"}


def test_missing_stage_model_invalidates_the_later_stages(tmp_path):
    run = complete_run(tmp_path / "run", STAGES)
    (run / "stage1" / "model.pt").unlink()
    [problem] = run_problems(run, STAGES)
    assert "job pretrain_stage1" in problem.message and run / "stage2" / "model.pt" in problem.delete


def bench_with_summary(tmp_path: Path) -> tuple[Path, Path]:
    bench = tmp_path / "results" / "ci"
    run = complete_run(bench / "runs" / "synthetic" / "supervised" / "labeled~2" / "seed~1")
    for name in ("tables", "figures"):
        (bench / name).mkdir()
        (bench / name / "x.md").write_text("table")
    record = {"dataset": "synthetic", "method": "supervised", "n_labeled": 2, "n_train": 4, "seed": 1}
    (bench / "summary.json").write_text(json.dumps({"runs": [record]}))
    old = (bench / "summary.json").stat().st_mtime - 100
    os.utime(run / JOURNAL, (old, old))  # the journal predates the tables
    return bench, run


def test_tables_that_include_a_run_without_metrics_are_a_problem(tmp_path):
    bench, run = bench_with_summary(tmp_path)
    assert find_inconsistencies(bench, [(run, ())]) == []
    for out in ("metrics_per_case.csv", "metrics.json", "predictions", "model.pt", "run_info.json"):
        subprocess.run(["rm", "-rf", str(run / out)], check=True)  # the user deletes a run's results by hand
    [problem] = find_inconsistencies(bench, [(run, ())])
    assert "includes run(s) whose metrics are missing" in problem.message and str(run) in problem.message
    assert set(problem.delete) == {bench / "tables", bench / "figures", bench / "summary.json"}


def test_a_newer_journal_line_means_the_report_reruns_anyway(tmp_path):
    bench, run = bench_with_summary(tmp_path)
    (run / "metrics_per_case.csv").unlink()
    start_job(run, "evaluate")  # a job started after the tables were written (and was killed)
    assert find_inconsistencies(bench, [(run, ())]) == []


def test_runs_not_in_the_tables_are_not_a_problem(tmp_path):
    bench, run = bench_with_summary(tmp_path)
    new_seed = bench / "runs" / "synthetic" / "supervised" / "labeled~2" / "seed~2"  # added to the grid since
    assert find_inconsistencies(bench, [(run, ()), (new_seed, ())]) == []


def test_the_message_gives_a_command_that_removes_exactly_the_stale_files(tmp_path):
    run = complete_run(tmp_path / "with space" / "labeled~2")
    (run / "run_info.json").unlink()
    problems = find_inconsistencies(tmp_path, [(run, ())])
    text = refusal_message(problems)
    command = text.splitlines()[-1].strip()
    assert command.startswith("rm -rf ")
    subprocess.run(shlex.split(command), check=True)
    assert find_inconsistencies(tmp_path, [(run, ())]) == []
    assert (run / "model.pt").exists() and (run / "run_config.yaml").exists()
