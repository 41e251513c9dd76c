"""The SLURM path (issue 24, docs/slurm.md).

- `test_every_job_asks_slurm_for_at_least_its_threads`: a dry run through profiles/slurm of a grid that plans a job
  of every rule of the workflow (every data source, a method with pre-training stages, every report rule): each job's
  `cpus_per_task` (what `sbatch --cpus-per-task` and the job step's `srun -c` ask for) is at least its threads. It
  fails when a rule's threads exceed what it asks SLURM for (the job step would not fit its allocation: "srun: error:
  Unable to create step ... More processors requested than permitted").
- On a single-node SLURM started from Debian's packages (tests/slurm_cluster.py; skipped where SLURM cannot start,
  unless the environment variable CI is set, where it fails: .ci/run installs the packages), both slow:
  `test_what_cannot_work_is_refused_before_submitting`: a request larger than the node, a missing partition and
  `sacct` without accounting stop the workflow at start with the keys to change (harness/workflow/cluster.py);
  `test_ci_grid_through_slurm_equals_a_local_run`: the CI grid with two methods run locally and through
  `--workflow-profile profiles/slurm` gives the same tables; then a training job is cancelled with `scancel` mid-run
  and the README's recovery command gives the same tables again.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ClusterUnavailable, start_cluster
from workflow_tools import BIN, REPO, env, log_lines, snakemake, start_snakemake, wait_for

PROFILE = REPO / "profiles" / "slurm"
CI_CONFIG = REPO / ".test" / "config" / "config.yaml"


# -- every rule's request fits what it runs (no SLURM needed) --------------------------------------------------------
def nifti_fakes():
    spec = importlib.util.spec_from_file_location("nifti_fakes", REPO / "tests" / "data" / "nifti_fakes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_rule_config(tmp_path: Path) -> Path:
    """A grid whose DAG has a job of every rule: the four data sources besides synthetic (placeholder raw files are
    enough for a dry run), methods with pre-training stages, a variant (the ablation rule) and the selection audit."""
    manifest = (REPO / "harness" / "data" / "manifests" / "la_manifest.csv").read_text().splitlines()[1:]
    la_ids = [line.split(",")[0] for line in manifest]
    raw = tmp_path / "la_raw"
    for case in la_ids:
        (raw / case).mkdir(parents=True)
        (raw / case / "lgemri.nrrd").touch()
        (raw / case / "laendo.nrrd").touch()
    msd = nifti_fakes().write_msd(tmp_path / "msd", n_cases=5)
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    geometry = {"patch_size": [16, 16, 16], "augment": "rotflip_crop", "stride": [16, 16, 8]}
    cfg["methods"] = ["supervised", "supervised@no_dropout", "sup_local_contrast", "bcp"]
    cfg["report"] = {**cfg.get("report", {}), "selection_audit": {"every": 2}}
    cfg["variants"] = {"supervised": {"no_dropout": {"has_dropout": False}}}
    datasets = ("synthetic", "la", "la_raw", "pancreas", "mine")
    cfg["datasets"] = {ds: {"labeled": [2], "upper_bound": False} for ds in datasets}
    cfg["data"].update(
        la=paper["data"]["la"],
        la_raw={
            **geometry,
            "source": "raw_nrrd",
            "n_train": 80,
            "spacing_mm": [1, 1, 1],
            "raw_nrrd": {"raw_root": str(raw)},
        },
        pancreas=paper["data"]["pancreas"],
        mine={**geometry, "source": "nifti", "nifti": {"root": str(msd), "foreground": [1], "modality": "mri"}},
    )
    path = tmp_path / "every_rule.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def dry_run_jobs(text: str) -> list[tuple[str, int, int | None]]:
    """(rule, threads, cpus_per_task) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n\s*\n", text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        cpus = re.search(r"\bcpus_per_task=(-?\d+)", resources[1]) if resources else None
        jobs.append((rule[1], int(threads[1]) if threads else 1, int(cpus[1]) if cpus else None))
    return jobs


def test_every_job_asks_slurm_for_at_least_its_threads(tmp_path):
    config = every_rule_config(tmp_path)
    # --cores 64: threads as on a cluster node (a dry run otherwise caps every job at 1 thread)
    where = ("--configfile", str(config), "--directory", str(tmp_path / "work"))
    res = snakemake("-n", "--workflow-profile", str(PROFILE), *where, "--cores", "64")
    jobs = dry_run_jobs(res.stdout + res.stderr)
    rules = snakemake("--list-rules", *where).stdout.split()
    planned = {rule for rule, _, _ in jobs}
    assert set(rules) - {"all"} <= planned, f"no job of {sorted(set(rules) - planned)}: extend every_rule_config"
    assert any(threads > 1 for _, threads, _ in jobs)  # the check below compares something
    too_small = sorted({(rule, threads, cpus) for rule, threads, cpus in jobs if cpus is None or cpus < threads})
    assert not too_small, f"jobs whose threads exceed their SLURM cpus_per_task (rule, threads, cpus): {too_small}"


# -- the CI grid through a real (single-node) SLURM -------------------------------------------------------------------
#: mean_teacher's iterations (supervised keeps the CI grid's 4): long enough to cancel its training job after its first
#: checkpoint (iteration 5) and before it ends, short enough for ~4.5 min in all.
ITERATIONS = 40
MT_RUN = "results/ci/runs/synthetic/mean_teacher/labeled~2/seed~1"
#: What a reader compares (as tests/test_faults.py): every table except the cost table (wall times), runs.csv,
#: summary.json, and each run's per-case metrics.
COMPARED = ("tables/*.md", "tables/*.csv", "runs.csv", "summary.json", "runs/*/*/*/*/metrics_per_case.csv")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A single-node SLURM (tests/slurm_cluster.py) for this module; skipped where it cannot start unless CI is set."""
    try:
        started = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as err:
        if os.environ.get("CI") is None:
            pytest.skip(f"SLURM cannot start here: {str(err).splitlines()[0]}")
        pytest.fail(f"CI is set but SLURM cannot start (.ci/run installs slurmctld slurmd slurm-client munge):\n{err}")
    yield started
    started.stop()


def grid_config(path: Path, threads: int) -> Path:
    """The CI grid with two methods, training long enough to be cancelled mid-run, requests that fit the node."""
    cfg = yaml.safe_load(CI_CONFIG.read_text())
    cfg["methods"] = ["supervised", "mean_teacher"]
    cfg["method_overrides"] = {"mean_teacher": {"protocol": {"iterations": ITERATIONS}}}
    cfg["compute"] = {
        **cfg.get("compute", {}),
        **{"train_threads": threads, "loader_workers": 0, "train_mem_mb": 1000, "predict_mem_mb": 1000},
        **{"checkpoint_every": 5, "log_every": 1},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def slurm_cmd(workdir: Path, config: Path, threads: int, *extra: str) -> list[str]:
    """The README's cluster command (no --cores: each job has its own allocation). --max-threads: the node's CPUs
    (the sensitivity rule asks for 4 threads); first status check after 2 s instead of 40 (test speed)."""
    return [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        "--workflow-profile",
        str(PROFILE),
        "--max-threads",
        str(threads),
        "--slurm-init-seconds-before-status-checks",
        "2",
        *extra,
    ]


def slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


def run_slurm(cluster, workdir: Path, config: Path, threads: int, *extra: str) -> subprocess.CompletedProcess:
    res = subprocess.run(
        slurm_cmd(workdir, config, threads, *extra), env=cluster.env(env()), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{slurm_logs(workdir)}\n{cluster.logs()}"
    return res


def tables(workdir: Path) -> dict[str, str]:
    out = workdir / "results" / "ci"
    found = {str(p.relative_to(out)): p.read_text() for pattern in COMPARED for p in sorted(out.glob(pattern))}
    found = {name: text for name, text in found.items() if not Path(name).name.startswith("cost.")}
    assert "tables/synthetic_voxel.csv" in found and len([n for n in found if n.endswith("metrics_per_case.csv")]) == 2
    return found


def assert_same_tables(found: dict[str, str], expected: dict[str, str], context: str = "") -> None:
    """Equal tables, or an error with the differing files and the first difference as a diff."""
    differ = sorted(name for name in found.keys() | expected.keys() if found.get(name) != expected.get(name))
    if differ:
        first = differ[0]
        diff = difflib.unified_diff(
            expected.get(first, "").splitlines(), found.get(first, "").splitlines(), "local", "slurm", lineterm=""
        )
        raise AssertionError(f"{context}\ntables differ: {differ}\n" + "\n".join(diff))


def torch_threads(workdir: Path) -> list[int]:
    runs = sorted((workdir / "results" / "ci" / "runs").glob("*/*/*/*/run_info.json"))
    return [yaml.safe_load(p.read_text())["torch_threads"] for p in runs]


@pytest.mark.slow
def test_what_cannot_work_is_refused_before_submitting(cluster, tmp_path):
    """A memory request larger than the node, a GPU partition that does not exist and sacct as the status command
    without accounting (Snakemake would hang): refused at start with the keys to change, nothing submitted."""
    config = grid_config(tmp_path / "grid.yaml", min(2, cluster.cpus))
    cfg = yaml.safe_load(config.read_text())
    cfg["compute"]["train_mem_mb"] = cluster.memory_mb + 1000
    config.write_text(yaml.safe_dump(cfg))
    before = len(cluster.jobs())
    cmd = slurm_cmd(
        tmp_path / "work",
        config,
        2,
        "--slurm-status-command",
        "sacct",
        "--set-resources",
        "predict:slurm_partition=gpu",
    )
    res = subprocess.run(cmd, env=cluster.env(env()), capture_output=True, text=True, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode != 0 and "SLURM run refused before submitting anything (docs/slurm.md)" in text, text
    assert "job states cannot be read: accounting is disabled on this cluster" in text
    assert (
        f"{cluster.memory_mb + 1000} MB > {cluster.memory_mb} MB (set compute.train_mem_mb <= {cluster.memory_mb})"
        in text
    )
    assert f"rule predict: partition 'gpu' does not exist (sinfo lists: {cluster.partition})" in text
    assert len(cluster.jobs()) == before


@pytest.mark.slow
def test_ci_grid_through_slurm_equals_a_local_run(cluster, tmp_path):
    threads = min(2, cluster.cpus)
    config = grid_config(tmp_path / "grid.yaml", threads)
    local, work = tmp_path / "local", tmp_path / "slurm"
    # the local run alongside the SLURM run (which mostly waits for SLURM): same results, less wall time
    local_run = start_snakemake(local, config)  # on 2 cores; torch threads from compute.train_threads

    # 1. the whole grid through SLURM: the same tables, computed with the same threads, inside SLURM allocations
    run_slurm(cluster, work, config, threads)
    local_out, _ = local_run.communicate(timeout=600)
    assert local_run.returncode == 0, local_out
    expected = tables(local)
    assert_same_tables(tables(work), expected)
    assert torch_threads(work) == torch_threads(local) == [threads, threads]
    submitted = {job["comment"] for job in cluster.jobs() if job["state"] == "COMPLETED"}
    for rule in ("make_synthetic", "train", "predict", "evaluate"):
        assert any(c.startswith(f"rule_{rule}_") for c in submitted), f"no {rule} job went through SLURM: {submitted}"
    train_log = (work / MT_RUN / "logs" / "train.log").read_text()
    assert "gpu_slot: keeping CUDA_VISIBLE_DEVICES=" in train_log  # SLURM's GRES allocation, kept by gpu_slot.sh

    # 2. a training job cancelled mid-run (scancel), then the README's recovery command: the same tables again
    (work / MT_RUN / "checkpoint_last.pt").unlink()  # retrain mean_teacher from scratch (a finished run would resume)
    cancelled_run = slurm_cmd(work, config, threads, "--forcerun", f"{MT_RUN}/model.pt", "--retries", "0")
    proc = subprocess.Popen(
        cancelled_run, env=cluster.env(env()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        job = wait_for(
            lambda: next(
                (j for j in cluster.jobs() if j["state"] == "RUNNING" and j["comment"].startswith("rule_train_")), None
            ),
            180,
            0.2,
        )
        assert job, "the training job did not start in SLURM"
        assert wait_for(lambda: (work / MT_RUN / "checkpoint_last.pt").exists(), 120, 0.05), "no checkpoint written"
        assert log_lines(work / MT_RUN / "train_log.jsonl") < ITERATIONS, "training finished before the cancel"
        cluster.run("scancel", job["id"])
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "CANCELLED" in out, out
    cancelled_at = log_lines(work / MT_RUN / "train_log.jsonl")
    assert 0 < cancelled_at < ITERATIONS
    started = time.monotonic()
    run_slurm(cluster, work, config, threads, "--rerun-incomplete")  # README "After a crash"
    resumed = re.search(r"resumed from \S+ at iteration (\d+)", (work / MT_RUN / "logs" / "train.log").read_text())
    assert resumed and 0 < int(resumed[1]) < ITERATIONS, "the recovered job did not resume from its checkpoint"
    assert_same_tables(tables(work), expected, f"recovery took {time.monotonic() - started:.0f} s")
