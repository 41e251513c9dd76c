"""SLURM runs (`--workflow-profile profiles/slurm`, docs/slurm.md): refuse, before the first submission, what SLURM
would refuse or what would make Snakemake wait forever, with the setting that fixes it.

Two checks, run by the Snakefile's `onstart` in the submitting Snakemake process when the executor is `slurm`:

- **Every job's request fits a node of its partition**: CPUs (`cpus_per_task`, which profiles/slurm sets to the
  rule's threads), memory (`mem_mb`, or `mem_mb_per_cpu` × CPUs), GPUs (`gpu`/`gpus` or a `gres` of gpu) and runtime
  against the nodes and time limit `sinfo` lists. Without it, `sbatch` answers "Memory specification can not be
  satisfied", "Requested node configuration is not available" or "Invalid generic resource (gres) specification"
  job by job, and none of these names the config key to change. The problem lines here do
  (`compute.train_mem_mb`, `compute.train_threads`, ...).
- **Job states can be read**: with accounting disabled (`AccountingStorageType=accounting_storage/none`, common on
  small clusters) `sacct` fails, and snakemake-executor-plugin-slurm (2.8.0), when its status command is `sacct`,
  loses track of the submitted jobs and waits forever. profiles/slurm sets `slurm-status-command: squeue`; the
  plugin still switches to `sacct` when `MinJobAge` is below three times `slurm-init-seconds-before-status-checks`
  and `sacct` is installed. The check predicts the command the plugin will use, as the plugin decides it.

The parsing and the decisions are plain functions of `sinfo`/`scontrol` text (unit-tested without SLURM,
tests/harness/test_cluster.py); `check_slurm_run` is the glue to Snakemake's objects. No torch import: the Snakefile
uses this module.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: `sinfo` output format: one line per node and partition.
SINFO_FORMAT = "%N|%P|%c|%m|%G|%l"
#: Where a rule's request comes from, for the problem lines (the other rules: profile or --set-threads/--set-resources).
SIZED_BY = {
    "train": ("compute.train_threads + compute.loader_workers", "compute.train_mem_mb", "compute.train_runtime_min"),
    "pretrain": ("compute.train_threads + compute.loader_workers", "compute.train_mem_mb", "compute.train_runtime_min"),
    "predict": ("compute.train_threads", "compute.predict_mem_mb", "compute.predict_runtime_min"),
}
DOCS = "docs/slurm.md"


class ClusterRequestError(RuntimeError):
    """A SLURM run that cannot work as configured; the message has one line per problem and its fix."""


@dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass
class Partition:
    name: str
    default: bool = False
    max_minutes: int | None = None  # None: no limit
    nodes: list[Node] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """What one job asks SLURM for (`partition` None: the cluster's default partition)."""

    rule: str
    cpus: int
    mem_mb: int | None = None
    gpus: int = 0
    runtime_min: int | None = None
    partition: str | None = None


def parse_minutes(text: str) -> int | None:
    """A SLURM time limit in minutes (rounded up); None for no limit.

    Formats: `infinite`/`UNLIMITED`, `minutes`, `minutes:seconds`, `hours:minutes:seconds`, `days-hours`,
    `days-hours:minutes`, `days-hours:minutes:seconds`.
    """
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    total_s = ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    return -(-total_s // 60)


def gpu_count(gres: str) -> int:
    """GPUs in a GRES string such as `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:2,shard:8` or `(null)`."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            total += int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1
    return total


def parse_sinfo(text: str) -> dict[str, Partition]:
    """Partitions with their nodes from `sinfo --noheader --Node --format=SINFO_FORMAT` output."""
    partitions: dict[str, Partition] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, partition, cpus, mem, gres, limit = (p.strip() for p in line.split("|"))
        default = partition.endswith("*")
        partition = partition.rstrip("*")
        entry = partitions.setdefault(partition, Partition(partition, default, parse_minutes(limit)))
        entry.nodes.append(Node(name, int(cpus), int(re.sub(r"\D.*", "", mem) or 0), gpu_count(gres)))
    return partitions


def parse_scontrol_config(text: str) -> dict[str, str]:
    """`scontrol show config` as a mapping (`Key = value` lines)."""
    config = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            config[key.strip()] = value.strip()
    return config


def parse_seconds(value: str | None) -> int | None:
    """`300 sec` -> 300 (MinJobAge as `scontrol show config` prints it)."""
    found = re.match(r"\s*(\d+)\s*([a-zA-Z]*)", value or "")
    if not found:
        return None
    return int(found[1]) * (3600 if found[2].lower() in ("h", "hour", "hours") else 1)


def effective_status_command(configured: str | None, min_job_age_s: int | None, init_s: int, sacct_installed: bool):
    """The command snakemake-executor-plugin-slurm 2.8.0 queries job states with (its own rule: `squeue` falls back to
    `sacct` when MinJobAge is unknown or below 3 × the first status check's delay and sacct is installed)."""
    command = configured or ("sacct" if sacct_installed else "squeue")
    if command == "squeue" and (min_job_age_s is None or min_job_age_s < 3 * init_s) and sacct_installed:
        command = "sacct"
    if command == "sacct" and not sacct_installed:
        command = "squeue"
    return command


def status_problem(config: Mapping[str, str], configured: str | None, init_s: int, sacct_installed: bool) -> str | None:
    """Why Snakemake could not read job states on this cluster, with the fix; None when it can."""
    accounting = config.get("AccountingStorageType", "")
    if "accounting_storage/none" not in accounting:
        return None
    min_job_age = parse_seconds(config.get("MinJobAge"))
    command = effective_status_command(configured, min_job_age, init_s, sacct_installed)
    if command != "sacct":
        return None
    why = "the status command is sacct"
    fix = "set slurm-status-command: squeue (profiles/slurm does)"
    if configured == "squeue" and min_job_age is None:
        why = "the SLURM plugin replaces squeue by sacct because scontrol shows no MinJobAge"
        fix = f"ask for MinJobAge >= {3 * init_s} s in slurm.conf"
    elif configured == "squeue":
        why = (
            f"the SLURM plugin replaces squeue by sacct because MinJobAge ({min_job_age} s) is below 3 x "
            f"slurm-init-seconds-before-status-checks ({init_s} s)"
        )
        fix = (
            f"pass --slurm-init-seconds-before-status-checks {max(min_job_age // 3, 1)} or less, or ask for "
            f"MinJobAge >= {3 * init_s} s in slurm.conf"
        )
    return (
        f"job states cannot be read: accounting is disabled on this cluster ({accounting}), so sacct fails, and "
        f"{why}; Snakemake would wait forever for the first job. Fix: {fix}"
    )


def request_problems(requests: Iterable[Request], partitions: Mapping[str, Partition]) -> list[str]:
    """One line per rule and partition whose request no node can hold (or whose partition is missing)."""
    default = next((p.name for p in partitions.values() if p.default), None)
    problems: dict[tuple[str, str | None], str] = {}
    for req in requests:
        name = req.partition or default
        key = (req.rule, name)
        if key in problems:
            continue
        if name is None:
            problems[key] = (
                f"rule {req.rule}: no partition given and the cluster has no default partition; set "
                "slurm_partition in profiles/slurm/profile.yaml"
            )
            continue
        if name not in partitions:
            listed = ", ".join(sorted(partitions)) or "none"
            problems[key] = f"rule {req.rule}: partition {name!r} does not exist (sinfo lists: {listed})"
            continue
        problem = _misfit(req, partitions[name])
        if problem:
            problems[key] = problem
    return list(problems.values())


def _misfit(req: Request, partition: Partition) -> str | None:
    if any(_fits(req, node) for node in partition.nodes) and not _too_long(req, partition):
        return None
    largest_cpus = max((n.cpus for n in partition.nodes), default=0)
    largest_mem = max((n.mem_mb for n in partition.nodes), default=0)
    most_gpus = max((n.gpus for n in partition.nodes), default=0)
    fixes = []
    if req.cpus > largest_cpus:
        fixes.append(f"{req.cpus} CPUs > {largest_cpus} ({_fix(req.rule, 0, largest_cpus)})")
    if req.mem_mb and req.mem_mb > largest_mem:
        fixes.append(f"{req.mem_mb} MB > {largest_mem} MB ({_fix(req.rule, 1, largest_mem)})")
    if req.gpus > most_gpus:
        fixes.append(
            f"{req.gpus} GPU(s) > {most_gpus} (no node of this partition declares GPUs as GRES: choose a "
            "GPU partition with slurm_partition, or ask for `Gres=gpu:N` on its nodes)"
        )
    if _too_long(req, partition):
        fixes.append(
            f"{req.runtime_min} min > the partition's limit of {partition.max_minutes} min "
            f"({_fix(req.rule, 2, partition.max_minutes)})"
        )
    if not fixes:  # each resource fits some node, but no node holds all of them together
        fixes.append(
            f"no single node has {req.cpus} CPUs, {req.mem_mb} MB and {req.gpus} GPU(s) "
            f"({_fix(req.rule, 0, req.cpus - 1)} or {_fix(req.rule, 1, req.mem_mb)})"
        )
    where = f"partition {partition.name!r} (largest node: {largest_cpus} CPUs, {largest_mem} MB, {most_gpus} GPUs)"
    return f"rule {req.rule} does not fit {where}: " + "; ".join(fixes)


def _fits(req: Request, node: Node) -> bool:
    return req.cpus <= node.cpus and (req.mem_mb or 0) <= node.mem_mb and req.gpus <= node.gpus


def _too_long(req: Request, partition: Partition) -> bool:
    return None not in (req.runtime_min, partition.max_minutes) and req.runtime_min > partition.max_minutes


def _fix(rule: str, kind: int, limit: int) -> str:
    """How to lower `rule`'s CPUs (kind 0), memory (1) or runtime (2) to at most `limit`."""
    keys = SIZED_BY.get(rule) or SIZED_BY.get(rule.split("_")[0])
    if keys:
        return f"set {keys[kind]} <= {limit}"
    return (
        f"pass --set-threads {rule}={limit} or --max-threads {limit}",
        f"pass --set-resources {rule}:mem_mb={limit}, or lower mem_mb in the profile's default-resources",
        f"pass --set-resources {rule}:runtime={limit}, or lower runtime in the profile's default-resources",
    )[kind]


def job_request(rule: str, threads: int, resources: Mapping[str, Any]) -> Request:
    """The request the SLURM plugin makes for a job with these threads and evaluated resources."""
    cpus = int(resources.get("cpus_per_task") or threads)
    cpus = max(cpus, 1)  # the plugin asks for at least 1; a negative value asks for none (SLURM's default: 1)
    mem = resources.get("mem_mb")
    if resources.get("mem_mb_per_cpu"):
        mem = int(resources["mem_mb_per_cpu"]) * cpus
    gpus = 0
    for key in ("gpus", "gpu", "nvidia_gpu"):
        if resources.get(key):
            gpus = int(resources[key])
            break
    else:
        gpus = gpu_count(str(resources.get("gres") or ""))
    runtime = resources.get("runtime")
    return Request(
        rule=rule,
        cpus=cpus,
        mem_mb=int(mem) if isinstance(mem, int | float) else None,
        gpus=gpus,
        runtime_min=int(runtime) if isinstance(runtime, int | float) else None,
        partition=str(resources.get("slurm_partition") or "") or None,
    )


def _run(*cmd: str) -> str | None:
    """The output of a SLURM command; None where it is missing, fails or hangs (slurmctld unreachable)."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def check_slurm_run(workflow: Any, logger: Any = None) -> None:
    """In the submitting Snakemake process (the Snakefile's `onstart`), with the SLURM executor: raise
    ClusterRequestError listing every job request no node can hold and a status command that cannot work.

    Anything else (another executor, no `sinfo` on this host) passes; where SLURM cannot be asked, the check says so
    through `logger` and lets the plugin go on. With the plugin's dynamic partition selection
    (`--slurm-partition-config` or SNAKEMAKE_SLURM_PARTITIONS) only jobs with an explicit `slurm_partition` are checked.
    """
    plugin = getattr(workflow, "executor_plugin", None)
    if plugin is None or getattr(plugin, "cli_prefix", None) != "slurm":
        return
    problems = []
    settings = getattr(workflow, "executor_settings", None)
    config_text = _run("scontrol", "show", "config")
    if config_text is not None:
        problem = status_problem(
            parse_scontrol_config(config_text),
            getattr(settings, "status_command", None),
            int(getattr(settings, "init_seconds_before_status_checks", 40) or 40),
            shutil.which("sacct") is not None,
        )
        if problem:
            problems.append(problem)
    sinfo = _run("sinfo", "--noheader", "--Node", f"--format={SINFO_FORMAT}")
    if sinfo is None:
        if logger is not None:
            logger.warning("harness: sinfo failed; job requests not checked against the cluster's nodes")
    else:
        requests = [
            job_request(job.rule.name, job.threads, job.resources)
            for job in workflow.dag.needrun_jobs()
            if not job.is_local
        ]
        if getattr(settings, "partition_config", None) or os.environ.get("SNAKEMAKE_SLURM_PARTITIONS"):
            requests = [r for r in requests if r.partition]  # the plugin picks the others' partition per job
        problems += request_problems(requests, parse_sinfo(sinfo))
    if problems:
        lines = "\n".join(f"  - {p}" for p in sorted(problems))
        raise ClusterRequestError(f"SLURM run refused before submitting anything ({DOCS}):\n{lines}")
