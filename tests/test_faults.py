"""Fault injection: faults at random points during reruns never leave a wrong number in a table.

One project copy goes through four reruns. Each is interrupted by a fault at a random point and then recovered with
the README's command (`snakemake --unlock ...`, then `snakemake --rerun-incomplete ...`); afterwards every table must
equal the tables of a clean run of the same code, data and config in a fresh folder, or the workflow must have
stopped with a message (which the test then follows, as a user would).

  A  no change             SIGKILL of Snakemake itself during training: the orphaned trainer stops by itself (with a
                           checkpoint), and the recovery started at once never runs a second trainer beside it
  B  a code change         SIGKILL of the training process (the change alters the numbers)
  C  a data change         SIGKILL of the prediction process (another synthetic seed)
  D  an evaluation change  SIGTERM to Snakemake during prediction: it stops its job and exits at once
  E  a metrics code edit   (the HD95 percentile) SIGKILL of the evaluation: evaluation and the tables are redone,
                           training and prediction are not (their code does not import the metrics)
  F  a thread change       SIGKILL of the training, then `compute.train_threads` changes before the recovery: the
                           checkpoint of the other thread count is not resumed (the numbers equal a clean run's)

(A list of test cases edited in place, the third kind of input change: tests/data/test_nifti_workflow.py.)
"""

from __future__ import annotations

import json
import random
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from workflow_tools import (
    REPO,
    RUN,
    copy_project,
    job_process,
    log_lines,
    run_snakemake,
    start_snakemake,
    wait_for,
)

pytestmark = pytest.mark.slow
ITERATIONS = 100  # ~3 s of training: an orphaned trainer is stopped long before it would finish
#: What a reader compares: every table except the cost table (wall times), runs.csv and summary.json.
COMPARED = ("tables/*.md", "tables/*.csv", "runs.csv", "summary.json")


def write_config(path: Path, *, data_seed: int = 3, stride: tuple[int, int, int] = (8, 8, 8), threads: int = 2) -> Path:
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["protocol"]["iterations"] = ITERATIONS
    cfg["compute"].update({"checkpoint_every": 10, "log_every": 1, "train_threads": threads})
    cfg["data"]["synthetic"]["synthetic"]["seed"] = data_seed
    cfg["data"]["synthetic"]["stride"] = list(stride)
    cfg["report"] = {"sensitivity": False}
    path.write_text(yaml.safe_dump(cfg))
    return path


def tables(workdir: Path) -> dict[str, str]:
    out = workdir / "results" / "ci"
    found = {str(p.relative_to(out)): p.read_text() for pattern in COMPARED for p in sorted(out.glob(pattern))}
    found = {name: text for name, text in found.items() if not Path(name).name.startswith("cost.")}
    assert "tables/synthetic_voxel.csv" in found and "summary.json" in found
    return found


def losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (workdir / RUN / "train_log.jsonl").read_text().splitlines()]


def clean_tables(project: Path, config: Path, workdir: Path) -> dict[str, str]:
    run_snakemake(workdir, config, project=project)
    return tables(workdir)


def recover(project: Path, config: Path, workdir: Path) -> None:
    """The README's recovery commands; where the workflow refuses stale results, do what its message says.

    (A refusal is allowed: it happens when a job was stopped in the few milliseconds before it invalidated its
    downstream results. The test then checks that the command it prints leads to correct tables.)
    """
    for _ in range(3):
        results = [
            run_snakemake(workdir, config, flag, project=project, check=False)
            for flag in ("--unlock", "--rerun-incomplete")
        ]
        refused = [r for r in results if "results refused" in r.stderr]
        if not refused:
            assert results[-1].returncode == 0, results[-1].stdout + results[-1].stderr
            return
        print("the workflow refused stale results; following its message:", refused[0].stderr, sep="\n")
        command = refused[0].stderr.split("then rerun:")[1].strip().splitlines()[0]
        subprocess.run(shlex.split(command), cwd=workdir, check=True)
    raise AssertionError("the workflow kept refusing after its rm command")


def interrupted(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0, "the faulty run should not succeed"
    return out


def wait_for_training(workdir: Path, lines: int):
    """The training process once the (new) training log has `lines` lines."""
    log = workdir / RUN / "train_log.jsonl"
    proc = wait_for(lambda: job_process("train", workdir))
    assert proc, "no training process started"
    # a rerun first truncates the old run's log: wait for a fresh log to grow
    assert wait_for(lambda: log_lines(log) < lines, 60)
    assert wait_for(lambda: log_lines(log) >= lines, 120), "training did not progress"
    return proc


def test_random_faults_during_reruns_never_leave_stale_tables(tmp_path):
    rng = random.Random()
    project = copy_project(tmp_path / "project")
    work = tmp_path / "work"
    config = write_config(tmp_path / "faults.yaml")
    expected = clean_tables(project, config, tmp_path / "clean0")

    # A: SIGKILL Snakemake during the first training: the orphaned trainer checkpoints and stops within seconds
    proc = start_snakemake(work, config, project=project)
    trainer = wait_for_training(work, rng.randint(2, ITERATIONS // 2))
    proc.kill()
    proc.wait()
    assert wait_for(lambda: not trainer.is_running(), 15), "the orphaned trainer goes on writing"
    assert "stopped after iteration" in (work / RUN / "logs" / "train.log").read_text()
    stopped_at = torch.load(work / RUN / "checkpoint_last.pt", weights_only=True)["next_it"]
    recover(project, config, work)
    assert json.loads((work / RUN / "run_info.json").read_text())["resumed_from"] == stopped_at < ITERATIONS
    assert tables(work) == expected and losses(work) == losses(tmp_path / "clean0")

    # B: a code change that alters the numbers; SIGKILL the training process at a random iteration
    source = project / "harness" / "numerics" / "losses.py"
    source.write_text(source.read_text().replace("smooth: float = 1e-5", "smooth: float = 1.0"))
    proc = start_snakemake(work, config, project=project)
    wait_for_training(work, rng.randint(2, ITERATIONS - 2)).kill()
    interrupted(proc)
    assert not (work / RUN / "model.pt").exists() and not (work / RUN / "metrics_per_case.csv").exists()
    recover(project, config, work)
    expected_b = clean_tables(project, config, tmp_path / "clean_b")
    assert expected_b != expected and tables(work) == expected_b
    assert losses(work) == losses(tmp_path / "clean_b")  # resumed training is the uninterrupted one

    # C: a data change (another synthetic seed); SIGKILL prediction during its start-up or between two cases
    config = write_config(tmp_path / "faults.yaml", data_seed=4)
    proc = start_snakemake(work, config, project=project)
    predictor = wait_for(lambda: job_process("predict", work), 300)
    assert predictor, "no prediction process started"
    if rng.random() < 0.5:
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        wait_for(lambda: list((work / RUN / "predictions.tmp").glob("*.nii.gz")), 30, interval=0.005)
    predictor.kill()
    interrupted(proc)
    recover(project, config, work)
    expected_c = clean_tables(project, config, tmp_path / "clean_c")
    assert expected_c != expected_b and tables(work) == expected_c

    # D: an evaluation change (stride); SIGTERM to Snakemake while it predicts: the job and Snakemake stop at once
    config = write_config(tmp_path / "faults.yaml", data_seed=4, stride=(4, 4, 4))
    proc = start_snakemake(work, config, project=project)
    predictor = wait_for(lambda: job_process("predict", work), 120)
    assert predictor, "no prediction process started"
    time.sleep(rng.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    interrupted(proc)
    assert time.time() - t0 < 30 and not predictor.is_running()
    recover(project, config, work)
    expected_d = clean_tables(project, config, tmp_path / "clean_d")
    assert expected_d != expected_c and tables(work) == expected_d
    assert "4x4x4" in expected_d["runs.csv"]

    # E: a metrics edit (HD95 at the 90th percentile); SIGKILL the evaluation: only evaluation and tables are redone
    model_time = (work / RUN / "model.pt").stat().st_mtime_ns
    metrics = project / "harness" / "evaluate" / "metrics.py"
    hd95 = "np.concatenate((d_pg, d_gp)), 95)"
    metrics.write_text(metrics.read_text().replace(hd95, hd95.replace("95", "90")))
    proc = start_snakemake(work, config, project=project)
    evaluator = wait_for(lambda: job_process("evaluate", work), 120)
    assert evaluator, "no evaluation process started"
    evaluator.kill()
    interrupted(proc)
    recover(project, config, work)
    expected_e = clean_tables(project, config, tmp_path / "clean_e")
    assert expected_e != expected_d and tables(work) == expected_e
    assert (work / RUN / "model.pt").stat().st_mtime_ns == model_time  # neither retrained nor predicted again
    metrics.write_text(metrics.read_text().replace(hd95.replace("95", "90"), hd95))

    # F: SIGKILL the training, then another thread count before the recovery: its checkpoint is not resumed
    source.write_text(source.read_text().replace("smooth: float = 1.0", "smooth: float = 0.5"))
    proc = start_snakemake(work, config, project=project)
    wait_for_training(work, rng.randint(12, ITERATIONS - 2)).kill()
    interrupted(proc)
    assert torch.load(work / RUN / "checkpoint_last.pt", weights_only=True)["threads"] == 2
    config = write_config(tmp_path / "faults.yaml", data_seed=4, stride=(4, 4, 4), threads=1)
    recover(project, config, work)
    info = json.loads((work / RUN / "run_info.json").read_text())
    assert info["resumed_from"] == 0 and info["threads"] == info["torch_threads"] == 1
    assert list((work / RUN).glob("checkpoint_stale_*.pt"))
    expected_f = clean_tables(project, config, tmp_path / "clean_f")
    assert tables(work) == expected_f and losses(work) == losses(tmp_path / "clean_f")
