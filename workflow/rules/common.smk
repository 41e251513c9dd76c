# What every .smk file uses: the validated config, the plan of runs (harness.workflow.plan), the report targets
# (harness.workflow.targets), the data rules' inputs (harness.workflow.data_inputs) and the wildcards. The logic lives
# in those modules and in harness.run (no torch import at DAG build); this file only wires them to Snakemake.
import json
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from harness.config import ConfigError  # noqa: E402
from harness.workflow.cluster import check_slurm_run  # noqa: E402
from harness.run.folder import RUN_PATTERN, RunId  # noqa: E402
from harness.run.jobs import export_for_jobs, export_runs_per_gpu, forward_stop_signals  # noqa: E402
from harness.run.lineage import refusal_message  # noqa: E402
from harness.run.method_table import read_methods  # noqa: E402
from harness.workflow.data_inputs import DataInputs  # noqa: E402
from harness.workflow.plan import Plan  # noqa: E402
from harness.workflow.targets import Targets  # noqa: E402
from harness.workflow.validate import validate_config  # noqa: E402
from harness.workflow.variants import written_at  # noqa: E402

# Jobs inherit: this Python first on PATH, this checkout first on PYTHONPATH, this process as their workflow.
export_for_jobs(workflow.basedir)
try:
    #: The methods as read from methods/*.py without importing them: names, pre-training stages, Config keys.
    METHODS = read_methods(workflow.basedir)
    validate_config(config, METHODS)  # schema + defaults + grid + method_overrides (also `harness check-config`)
except ConfigError as err:
    raise WorkflowError(f"config refused: {err}") from None

PLAN = Plan(config, METHODS, workflow.basedir)
TARGETS = Targets(config)
DATA = DataInputs(config)
COMPUTE = config["compute"]
RUN = f"{PLAN.bench}/runs/{RUN_PATTERN}"
GPU_SLOT = Path(workflow.basedir, "workflow", "scripts", "gpu_slot.sh")
#: Every pre-training stage name of any method: one `pretrain_<stage>` rule each (workflow/rules/train.smk).
STAGE_NAMES = sorted({s for m in METHODS.values() for s in m.stages})
export_runs_per_gpu(COMPUTE["runs_per_gpu"])  # gpu_slot.sh: slots per device

if not (workflow.remote_exec or workflow.subprocess_exec):  # the main Snakemake process only
    problems = PLAN.stale_results()  # a run folder deleted by hand, a job killed before it invalidated its outputs
    if problems:
        raise WorkflowError(f"results refused: {refusal_message(problems)}")


onstart:
    forward_stop_signals()  # SIGINT/SIGTERM to Snakemake stop the running jobs too (they save a checkpoint)
    check_slurm_run(workflow, logger)  # SLURM executor: every request fits a node, job states readable


def is_dry_run():
    """-n/--dry-run (the executor, which knows, is not set up yet while the Snakefile is parsed)."""
    long = {"--dry-run", "--dryrun", "--just-print"}
    return any(a in long or (a.startswith("-") and not a.startswith("--") and "n" in a) for a in sys.argv[1:])


if is_dry_run() and PLAN.name != "smoke":  # the training time of this grid, scaled from the smoke run's
    from harness.workflow.cost_estimate import print_estimate

    print_estimate(config, METHODS, Path("results/smoke"))


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    method=r"[a-z][a-z0-9_]*(@[A-Za-z0-9_.=+-]+)?",  # a method or a variant (harness.workflow.variants.GRID_NAME)
    n=r"\d+",
    seed=r"\d+",


def one_of(names):
    """A wildcard constraint matching exactly the given names (none: matches nothing)."""
    return "|".join(names) or "(?!x)x"


def run_of(wildcards):
    return RunId(wildcards.dataset, wildcards.method, int(wildcards.n), int(wildcards.seed))


def run_params(wildcards):
    """The run's parameters as JSON: a rerun trigger for this run only."""
    return PLAN.run_params(run_of(wildcards))


def code(command):
    """Params function: the code identity of a `command` job of the run's method (harness.run.code)."""
    return lambda wildcards: PLAN.code(command, getattr(wildcards, "method", None))


def previous_model(stage):
    """Input function: the model.pt the job of `stage` (None: the main training) starts from, if any."""
    return lambda wildcards: PLAN.previous_model(run_of(wildcards), stage)


def previous_model_arg(wildcards, input):
    """`--previous-model <path>` when the job starts from a stage's model.pt (empty for a first stage)."""
    return f"--previous-model {input.previous}" if input.previous else ""


def write_run_config_logged(cell_json, out, log, where):
    """The run_config rule's work, in this process: resolve and write run_config.yaml, start the journal; the log
    says what was written or why not."""
    from harness.method.build import write_run_config

    with open(log, "w") as f:
        try:
            cfg = write_run_config(json.loads(cell_json), Path(out), where)
        except Exception as err:
            f.write(f"run_config refused: {err}\n")
            raise
        f.write(f"wrote {out} (config sha256 {cfg.sha256()})\n")


def dataset_runs(name, first_seed=False):
    """Input function: `name` of every run of the job's dataset (only the first configured seed's if asked)."""
    seed = config["seeds"][0] if first_seed else None
    return lambda wildcards: PLAN.run_files(name, wildcards.dataset, seed)


def dataset_barrier(first_seed=False):
    """Input function: `PLAN.barrier` of the runs of the job's dataset (only the first seed's if asked)."""
    seed = config["seeds"][0] if first_seed else None
    return lambda wildcards: PLAN.barrier(wildcards.dataset, seed)


def cost_patterns():
    """Benchmark pattern of each run rule that declares a benchmark file (the cost table's inputs)."""
    names = [*(f"pretrain_{s}" for s in STAGE_NAMES), "train", "predict", "evaluate"]
    return {n: str(getattr(rules, n).benchmark) for n in names if getattr(rules, n).rule.benchmark is not None}


def cost_inputs():
    """The benchmark files of every run for the rules of `cost_patterns` (empty: no cost table)."""
    files = []
    for rule, pattern in cost_patterns().items():
        stage = rule.removeprefix("pretrain_") if rule.startswith("pretrain_") else None
        for r in PLAN.runs:
            if stage is None or stage in PLAN.own_stages(r):
                files.append(pattern.format(dataset=r.dataset, method=r.method, n=r.n_labeled, seed=r.seed))
    return files
