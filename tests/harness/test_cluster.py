"""harness.workflow.cluster: SLURM requests checked against `sinfo`, and a status command that can read job states."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.workflow import cluster
from harness.workflow.cluster import (
    ClusterRequestError,
    Request,
    effective_status_command,
    gpu_count,
    job_request,
    parse_minutes,
    parse_scontrol_config,
    parse_sinfo,
    request_problems,
    status_problem,
)

# `sinfo --noheader --Node --format=%N|%P|%c|%m|%G|%l` of a small lab cluster: a CPU partition (default) and a GPU one
SINFO = """\
cpu01|cpu*|32|128000|(null)|1-00:00:00
cpu02|cpu*|32|128000|(null)|1-00:00:00
gpu01|gpu|16|64000|gpu:a100:2(S:0-1)|2:00:00
gpu02|gpu|8|256000|gpu:4|2:00:00
"""


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("infinite", None),
        ("UNLIMITED", None),
        ("30", 30),
        ("30:30", 31),
        ("2:00:00", 120),
        ("1-00:00:00", 1440),
        ("2-12", 3600),
        ("1-02:30", 1590),
        ("0:00:59", 1),
    ],
)
def test_slurm_time_limits_in_minutes(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize(
    ("gres", "gpus"), [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4), ("gpu:2,shard:8", 2), ("gpu", 1)]
)
def test_gpus_in_a_gres_string(gres, gpus):
    assert gpu_count(gres) == gpus


def test_sinfo_partitions_nodes_and_default():
    partitions = parse_sinfo(SINFO)
    assert set(partitions) == {"cpu", "gpu"}
    assert partitions["cpu"].default and not partitions["gpu"].default
    assert partitions["gpu"].max_minutes == 120 and partitions["cpu"].max_minutes == 1440
    assert [(n.name, n.cpus, n.mem_mb, n.gpus) for n in partitions["gpu"].nodes] == [
        ("gpu01", 16, 64000, 2),
        ("gpu02", 8, 256000, 4),
    ]


def test_requests_that_fit_a_node_pass():
    partitions = parse_sinfo(SINFO)
    ok = [
        Request("train", cpus=4, mem_mb=24000, gpus=1, runtime_min=120, partition="gpu"),
        Request("train", cpus=8, mem_mb=200000, gpus=4, runtime_min=60, partition="gpu"),  # gpu02 holds it
        Request("evaluate", cpus=1, mem_mb=4000, runtime_min=60),  # default partition
    ]
    assert request_problems(ok, partitions) == []


def test_each_misfit_names_the_key_that_sizes_it():
    partitions = parse_sinfo(SINFO)
    problems = request_problems(
        [
            Request("train", cpus=4, mem_mb=300000, gpus=1, runtime_min=480, partition="gpu"),
            Request("train", cpus=4, mem_mb=300000, gpus=1, runtime_min=480, partition="gpu"),  # reported once
            Request("predict", cpus=64, mem_mb=16000, gpus=1, partition="gpu"),
            Request("pretrain_stage1", cpus=4, mem_mb=24000, gpus=1),  # default partition cpu: no GPU
            Request("sensitivity", cpus=48, mem_mb=4000),
        ],
        partitions,
    )
    assert len(problems) == 4
    train, predict, stage1, sensitivity = problems
    assert train.startswith("rule train does not fit partition 'gpu' (largest node: 16 CPUs, 256000 MB, 4 GPUs)")
    assert "300000 MB > 256000 MB (set compute.train_mem_mb <= 256000)" in train
    assert "480 min > the partition's limit of 120 min (set compute.train_runtime_min <= 120)" in train
    assert "64 CPUs > 16 (set compute.train_threads <= 16)" in predict
    assert "1 GPU(s) > 0" in stage1 and "GRES" in stage1 and "partition 'cpu'" in stage1
    assert "pass --set-threads sensitivity=32 or --max-threads 32" in sensitivity


def test_no_single_node_holds_the_whole_request():
    # 16 CPUs fit gpu01, 200000 MB fit gpu02, but no node has both
    problems = request_problems([Request("train", 16, 200000, 1, partition="gpu")], parse_sinfo(SINFO))
    assert len(problems) == 1 and "no single node has 16 CPUs, 200000 MB and 1 GPU(s)" in problems[0]


def test_unknown_partition_and_no_default_partition():
    partitions = parse_sinfo(SINFO)
    (unknown,) = request_problems([Request("train", 1, partition="gpus")], partitions)
    assert unknown == "rule train: partition 'gpus' does not exist (sinfo lists: cpu, gpu)"
    no_default = parse_sinfo(SINFO.replace("cpu*", "cpu"))
    (missing,) = request_problems([Request("evaluate", 1)], no_default)
    assert "no partition given and the cluster has no default partition" in missing


def test_job_request_from_threads_and_resources():
    resources = {"mem_mb": 24000, "runtime": 480, "gpu": 1, "cpus_per_task": 4, "slurm_partition": "gpu"}
    assert job_request("train", 4, resources) == Request("train", 4, 24000, 1, 480, "gpu")
    # no cpus_per_task: the plugin asks for the threads; mem per CPU; GPUs from a gres; empty partition = default
    per_cpu = {"mem_mb_per_cpu": 1000, "gres": "gpu:a100:2", "slurm_partition": ""}
    assert job_request("predict", 3, per_cpu) == Request("predict", 3, 3000, 2, None, None)


SCONTROL = """\
Configuration data as of 2026-12-04T12:00:00
AccountingStorageType   = accounting_storage/none
MinJobAge               = 300 sec
SlurmctldPort           = 6817
"""


def test_scontrol_config_lines():
    config = parse_scontrol_config(SCONTROL)
    assert config["AccountingStorageType"] == "accounting_storage/none" and config["MinJobAge"] == "300 sec"


@pytest.mark.parametrize(
    ("configured", "min_job_age", "init_s", "sacct", "expected"),
    [
        (None, 300, 40, True, "sacct"),  # the plugin's default where sacct is installed
        (None, 300, 40, False, "squeue"),
        ("squeue", 300, 40, True, "squeue"),
        ("squeue", 60, 40, True, "sacct"),  # MinJobAge < 3 x 40 s: the plugin switches back to sacct
        ("squeue", 60, 40, False, "squeue"),
        ("squeue", None, 40, True, "sacct"),
        ("sacct", 300, 40, False, "squeue"),
    ],
)
def test_the_status_command_the_plugin_will_use(configured, min_job_age, init_s, sacct, expected):
    assert effective_status_command(configured, min_job_age, init_s, sacct) == expected


def test_status_problem_only_where_sacct_would_be_asked_without_accounting():
    config = parse_scontrol_config(SCONTROL)
    assert status_problem(config, "squeue", 40, True) is None
    default = status_problem(config, None, 40, True)
    assert (
        "accounting is disabled" in default and "wait forever" in default and "slurm-status-command: squeue" in default
    )
    low_age = status_problem({**config, "MinJobAge": "60 sec"}, "squeue", 40, True)
    assert "MinJobAge (60 s)" in low_age and "--slurm-init-seconds-before-status-checks 20" in low_age
    unknown_age = status_problem({**config, "MinJobAge": ""}, "squeue", 40, True)
    assert "scontrol shows no MinJobAge" in unknown_age and "ask for MinJobAge >= 120 s" in unknown_age
    with_accounting = {**config, "AccountingStorageType": "accounting_storage/slurmdbd"}
    assert status_problem(with_accounting, None, 40, True) is None


def fake_workflow(executor: str, jobs: list, status_command: str | None = "squeue"):
    job_objects = [
        SimpleNamespace(rule=SimpleNamespace(name=rule), threads=threads, resources=res, is_local=local)
        for rule, threads, res, local in jobs
    ]
    return SimpleNamespace(
        executor_plugin=SimpleNamespace(cli_prefix=executor),
        executor_settings=SimpleNamespace(status_command=status_command, init_seconds_before_status_checks=40),
        dag=SimpleNamespace(needrun_jobs=lambda: iter(job_objects)),
    )


def test_check_slurm_run_refuses_before_submitting(monkeypatch):
    answers = {"scontrol": SCONTROL, "sinfo": SINFO}
    monkeypatch.setattr(cluster, "_run", lambda *cmd: answers[cmd[0]])
    monkeypatch.setattr(cluster.shutil, "which", lambda name: f"/usr/bin/{name}")
    jobs = [
        ("train", 4, {"mem_mb": 24000, "runtime": 480, "gpu": 1, "cpus_per_task": 4, "slurm_partition": "gpu"}, False),
        ("aggregate", 64, {"mem_mb": 10**7}, True),  # local rules run on the submit host: not checked
    ]
    with pytest.raises(ClusterRequestError) as refused:
        cluster.check_slurm_run(fake_workflow("slurm", jobs, status_command=None))
    message = str(refused.value)
    assert message.startswith("SLURM run refused before submitting anything (docs/slurm.md):\n  - job states")
    assert "compute.train_runtime_min <= 120" in message and "aggregate" not in message
    # the same jobs with the profile's status command and a runtime that fits: nothing to refuse
    jobs[0][2]["runtime"] = 120
    cluster.check_slurm_run(fake_workflow("slurm", jobs))


def test_check_slurm_run_leaves_other_executors_alone(monkeypatch):
    monkeypatch.setattr(cluster, "_run", lambda *cmd: pytest.fail("SLURM asked outside a SLURM run"))
    cluster.check_slurm_run(fake_workflow("local", [("train", 64, {"mem_mb": 10**7}, False)]))
    cluster.check_slurm_run(SimpleNamespace(executor_plugin=None))


def test_check_slurm_run_goes_on_where_sinfo_cannot_answer(monkeypatch):
    warnings = []
    monkeypatch.setattr(cluster, "_run", lambda *cmd: None)
    logger = SimpleNamespace(warning=warnings.append)
    cluster.check_slurm_run(fake_workflow("slurm", [("train", 64, {"mem_mb": 10**7}, False)]), logger)
    assert warnings and "sinfo" in warnings[0]


def test_dynamic_partition_selection_checks_only_explicit_partitions(monkeypatch):
    monkeypatch.setattr(cluster, "_run", lambda *cmd: {"scontrol": SCONTROL, "sinfo": SINFO}[cmd[0]])
    monkeypatch.setenv("SNAKEMAKE_SLURM_PARTITIONS", "partitions.yaml")
    # no slurm_partition: the plugin chooses among its configured partitions, the check leaves the job alone
    cluster.check_slurm_run(fake_workflow("slurm", [("train", 4, {"mem_mb": 200000, "gpu": 1}, False)]))
    with pytest.raises(ClusterRequestError, match="partition 'nope' does not exist"):
        cluster.check_slurm_run(fake_workflow("slurm", [("train", 4, {"slurm_partition": "nope"}, False)]))
