# Config validation, the grid, the method table, paths and per-run parameters. All logic lives in harness.config and
# harness.workflow (no torch import).
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from harness.config import ConfigError  # noqa: E402
from harness.workflow.cluster import check_slurm_run  # noqa: E402
from harness.workflow.code import numeric_sources  # noqa: E402
from harness.workflow.grid import (
    PANCREAS_DUPLICATES,
    SPLIT_MCNET_MINUS,
    Cell,
    cell_params,
    data_block,
    grid_cells,
    nifti_split,
    source_settings,
)  # noqa: E402
from harness.workflow.job_control import (
    export_for_jobs,
    export_runs_per_gpu,
    forward_stop_signals,
)  # noqa: E402
from harness.workflow.lineage import describe as describe_problems, find_inconsistencies  # noqa: E402
from harness.workflow.method_table import read_methods  # noqa: E402
from harness.workflow.validate import validate_config  # noqa: E402
from harness.workflow.variants import base_of  # noqa: E402

# Jobs inherit: this Python first on PATH (the rules' `python -m harness`), and this process as their workflow.
export_for_jobs()
try:
    #: The methods as read from methods/*.py without importing them: names, pre-training stages, Config keys.
    METHODS = read_methods(workflow.basedir)
    validate_config(config, METHODS)  # schema + defaults + grid + method_overrides (also `harness check-config`)
except ConfigError as err:
    raise WorkflowError(f"config refused: {err}") from None

NAME = config["name"]
GPU_SLOT = Path(workflow.basedir, "workflow", "scripts", "gpu_slot.sh")
export_runs_per_gpu(config["compute"]["runs_per_gpu"])  # gpu_slot.sh: slots per device
CELLS = grid_cells(config)
#: Every pre-training stage name of any method: one `pretrain_<stage>` rule each (workflow/rules/train.smk).
STAGE_NAMES = sorted({s for m in METHODS.values() for s in m.stages})


def stages_of(method):
    """The pre-training stages of `method` (a variant: its base method's), in order (`harness.workflow.method_table`)."""
    return METHODS[base_of(method)].stages



def stage_home(cell, stage):
    """The run folder that holds `stage` of `cell`: its own, or for a shared stage (the method's SHARED_STAGES, which
    read no labels) the folder of the dataset's smallest labeled count, trained once for all labeled counts."""
    n = cell.n_labeled
    if stage in METHODS[base_of(cell.method)].shared_stages:
        n = min(config["datasets"][cell.dataset]["labeled"])
    return f"results/{NAME}/runs/{Cell(cell.dataset, cell.method, n, cell.seed).run_path}"


def own_stages(cell):
    """The pre-training stages whose outputs are in the cell's own run folder."""
    own = f"results/{NAME}/runs/{cell.run_path}"
    return tuple(s for s in stages_of(cell.method) if stage_home(cell, s) == own)


def check_results():
    """Refuse results that outlived the files they were computed from and that Snakemake would not redo
    (harness.workflow.lineage: a run folder deleted by hand, a job killed before it invalidated its downstream)."""
    runs = [(Path(f"results/{NAME}/runs/{c.run_path}"), own_stages(c)) for c in CELLS]
    problems = find_inconsistencies(Path(f"results/{NAME}"), runs)
    if problems:
        raise WorkflowError(f"results refused: {describe_problems(problems)}")


if not (workflow.remote_exec or workflow.subprocess_exec):  # the main Snakemake process only
    check_results()


onstart:
    forward_stop_signals()  # SIGINT/SIGTERM to Snakemake stop the running jobs too (they save a checkpoint)
    check_slurm_run(workflow, logger)  # SLURM executor: every request fits a node, job states readable


def print_cost_estimate(measured=Path("results/smoke")):
    """On a dry run of a grid other than the smoke grid, print the training time scaled from the smoke run."""
    from harness.report.cost_estimate import describe, estimate, unit_costs

    if NAME == "smoke" or not measured.exists():
        return
    units = unit_costs(measured)
    if units:
        print(describe(estimate(config, units, METHODS), measured), file=sys.stderr)


def is_dry_run():
    """-n/--dry-run (the executor, which knows, is not set up yet while the Snakefile is parsed)."""
    flags = sys.argv[1:]
    long = {"--dry-run", "--dryrun", "--just-print"}
    return any(
        a in long or (a.startswith("-") and not a.startswith("--") and "n" in a)
        for a in flags
    )


if is_dry_run():
    print_cost_estimate()
RUN = f"results/{NAME}/runs/{{dataset}}/{{method}}/labeled~{{n}}/seed~{{seed}}"
SYNTHETIC = [
    ds for ds, spec in config["data"].items() if spec.get("source") == "synthetic"
]
LA_RELEASED = [
    ds for ds, spec in config["data"].items() if spec.get("source") == "released_h5"
]
LA_RAW = [ds for ds, spec in config["data"].items() if spec.get("source") == "raw_nrrd"]
TCIA = [ds for ds, spec in config["data"].items() if spec.get("source") == "tcia"]
NIFTI = [ds for ds, spec in config["data"].items() if spec.get("source") == "nifti"]
MANIFESTS = Path(workflow.basedir, "harness", "data", "manifests")
LA_CASE = r"[0-9A-Z]{20}"  # LA case IDs (they reach shell commands)
PANCREAS_CASE = r"image\d{4}"
NIFTI_CASE = r"[A-Za-z0-9][A-Za-z0-9_-]*"  # harness.data.splits.SAFE_CASE_ID (no dots, no path separators)


def one_of(names):
    """A wildcard constraint matching exactly the given names (none: matches nothing)."""
    return "|".join(names) or "(?!x)x"


wildcard_constraints:
    dataset=r"[a-z][a-z0-9_]*",
    method=r"[a-z][a-z0-9_]*(@[A-Za-z0-9_.=+-]+)?",  # a method or a variant (harness.workflow.variants.GRID_NAME)
    n=r"\d+",
    seed=r"\d+",


def total_cores():
    """--cores, or None where none is given (a cluster run; `snakemake --report report.html`)."""
    try:
        return workflow.cores
    except WorkflowError:  # Snakemake 9 raises instead of returning None
        return None


# Capped by --cores where given; on a cluster without --cores each job gets compute.train_threads CPUs of its own
# (the SLURM request is the rule's threads), and the Snakemake inside the job computes the same number.
TRAIN_THREADS = min(config["compute"]["train_threads"], total_cores() or config["compute"]["train_threads"])


def cell_of(wildcards):
    return Cell(
        wildcards.dataset, wildcards.method, int(wildcards.n), int(wildcards.seed)
    )


def run_params(wildcards):
    """The cell's parameters as JSON: a rerun trigger for this cell only."""
    return json.dumps(cell_params(config, cell_of(wildcards)), sort_keys=True)


def write_run_config_logged(cell_json, out, log):
    """The run_config rule's work, in this process: resolve and write run_config.yaml, start the journal; the log
    says what was written or why not."""
    from harness.method.build import write_run_config

    with open(log, "w") as f:
        try:
            cfg = write_run_config(json.loads(cell_json), Path(out))
        except Exception as err:
            f.write(f"run_config refused: {err}\n")
            raise
        f.write(f"wrote {out} (config sha256 {cfg.sha256()})\n")


def data_manifest(wildcards):
    return f"resources/{wildcards.dataset}/manifest.json"


def data_setting(key):
    def get(wildcards):
        return " ".join(str(v) for v in config["data"][wildcards.dataset][key])

    return get


def eval_spacing(wildcards):
    """Voxel size of the mm metrics and NIfTI headers: `data.<ds>.spacing_mm`, or `data` for a source whose prepared
    data records it (nifti: the target spacing, read from manifest.json by the job)."""
    block = config["data"][wildcards.dataset]
    if block.get("source") == "nifti":
        return "data"
    return " ".join(str(v) for v in block["spacing_mm"])


def data_value(key):
    def get(wildcards):
        return config["data"][wildcards.dataset][key]

    return get


def synthetic_setting(key):
    def get(wildcards):
        return config["data"][wildcards.dataset]["synthetic"][key]

    return get


def code_inputs(wildcards):
    """Source files whose changes alter the numbers of a training run (Snakemake does not track imports)."""
    return [str(p) for p in numeric_sources(Path(workflow.basedir), base_of(wildcards.method))]


def previous_stage_model(stage):
    """Input function: the model.pt a job starts from (none for most methods).

    For `pretrain_<stage>`, the method's stage before `stage`; for `train` (stage None), its last stage.
    """

    def get(wildcards):
        stages = stages_of(wildcards.method)
        if stage is not None and stage not in stages:
            raise WorkflowError(
                f"method {wildcards.method} has no pre-training stage {stage!r}"
            )
        index = len(stages) if stage is None else stages.index(stage)
        if index == 0:
            return []
        previous = stages[index - 1]
        return [f"{stage_home(cell_of(wildcards), previous)}/{previous}/model.pt"]

    return get


def previous_model_arg(wildcards, input):
    """`--previous-model <path>` when the job starts from a stage's model.pt (empty for a first stage)."""
    return f"--previous-model {input.previous}" if input.previous else ""


def output_folder(wildcards, output):
    """The folder of a rule's first output (figures are written into it)."""
    return str(Path(output[0]).parent)


def run_files(name, dataset=None, seed=None):
    """`name` (e.g. run_info.json) of every run, optionally of one dataset and/or one seed."""
    return [
        f"results/{NAME}/runs/{c.run_path}/{name}"
        for c in CELLS
        if (dataset is None or c.dataset == dataset)
        and (seed is None or c.seed == seed)
    ]


def per_case_csvs():
    return run_files("metrics_per_case.csv")


def run_barrier(wildcards=None):
    """Journals and metrics of every run: a report rule that reads runs takes them as inputs, so it reruns when a
    job of one of them started (the journal changed) and runs after all their jobs (harness.workflow.lineage)."""
    return run_files("journal.log") + run_files("metrics_per_case.csv")


def dataset_barrier(first_seed=False):
    """Input function: `run_barrier` for the runs of the job's dataset (only the first seed's if asked)."""

    def get(wildcards):
        journals = dataset_runs("journal.log", first_seed)(wildcards)
        return journals + dataset_runs("metrics_per_case.csv", first_seed)(wildcards)

    return get


# -- report targets (tables, figures, sensitivity, qualitative, provenance, cost; workflow/rules/report.smk) --
REPORT = config["report"]
DATASETS = list(config["datasets"])
TABLES = f"results/{NAME}/tables"
FIGURES = f"results/{NAME}/figures"
TABLE_KINDS = {
    "voxel": ("Results", "results, distances in voxels", "table_results.rst"),
    "mm": ("Results", "results, distances in mm", "table_results.rst"),
    "published": (
        "Published comparison",
        "published comparison",
        "table_published.rst",
    ),
    "stats": (
        "Tests and intervals",
        "paired tests and bootstrap CIs",
        "table_stats.rst",
    ),
}
COST_RULES = (
    *(f"pretrain_{s}" for s in STAGE_NAMES),
    "train",
    "predict",
    "evaluate",
)


def dataset_runs(name, first_seed=False):
    """Input function: `name` of every run of the job's dataset (only the first configured seed if asked)."""

    def get(wildcards):
        seed = config["seeds"][0] if first_seed else None
        return run_files(name, dataset=wildcards.dataset, seed=seed)

    return get


def table_files():
    """Markdown, CSV and LaTeX tables written by the aggregate rule (the HTML twins are in `table_reports`)."""
    return [
        f"{TABLES}/{ds}_{kind}.{ext}"
        for ds in DATASETS
        for kind in TABLE_KINDS
        for ext in ("md", "csv", "tex")
    ]


def table_reports():
    """HTML tables of the aggregate rule, flagged for `snakemake --report`."""
    files = []
    for ds in DATASETS:
        for kind, (category, title, caption) in TABLE_KINDS.items():
            labels = {"dataset": ds, "table": title}
            html = f"{TABLES}/{ds}_{kind}.html"
            rst = f"../report/{caption}"
            files.append(report(html, caption=rst, category=category, labels=labels))
    return files


def figure_stems():
    stems = ["dice_vs_labeled"]
    for ds in sorted(DATASETS):
        stems += [f"dice_per_case_{ds}", f"hd95_per_case_{ds}", f"training_curves_{ds}"]
    return stems


def figure_files():
    """PNG (flagged for the report) and PDF files of the figures rule."""
    captions = {
        "dice": "per_case.rst",
        "hd95": "per_case.rst",
        "training": "training_curves.rst",
    }
    files = []
    for stem in figure_stems():
        caption = captions.get(stem.split("_")[0], "dice_vs_labeled.rst")
        labels = {"figure": stem}
        png = report(
            f"{FIGURES}/{stem}.png",
            caption=f"../report/{caption}",
            category="Figures",
            labels=labels,
        )
        files += [png, f"{FIGURES}/{stem}.pdf"]
    return files


def qualitative_case(wildcards):
    return REPORT["qualitative_cases"].get(wildcards.dataset, "")


def sensitivity_files():
    if not REPORT["sensitivity"]:
        return []
    return [
        f"{TABLES}/{ds}_sensitivity.{ext}"
        for ds in DATASETS
        for ext in ("md", "csv", "tex", "html")
    ]


def cost_patterns():
    """Benchmark pattern per name of COST_RULES that declares a benchmark file (the cost table's hook, issue #6)."""
    patterns = {}
    for name in COST_RULES:
        proxy = getattr(rules, name, None)
        if proxy is not None and proxy.rule.benchmark is not None:
            patterns[name] = str(proxy.benchmark)  # without wildcard constraints
    return patterns


def cost_inputs():
    """The benchmark files of every run for the rules of `cost_patterns` (empty: no cost table)."""
    files = []
    for rule, pattern in cost_patterns().items():
        stage = rule.removeprefix("pretrain_") if rule.startswith("pretrain_") else None
        for c in CELLS:
            if stage is None or stage in own_stages(c):
                files.append(
                    pattern.format(
                        dataset=c.dataset, method=c.method, n=c.n_labeled, seed=c.seed
                    )
                )
    return files


def cost_pattern_args(wildcards):
    """RULE=PATTERN arguments of the cost rule (a function, so Snakemake leaves the braces alone)."""
    return [f"{name}={pattern}" for name, pattern in cost_patterns().items()]


def cost_files():
    if not cost_inputs():
        return []
    return [f"{TABLES}/cost.{ext}" for ext in ("md", "csv", "tex", "html")]


# -- ablation tables and sweep figures (workflow/rules/report.smk `ablation`, docs/ablations.md) --
ABLATION_BASES = list(
    dict.fromkeys(base_of(m) for m in config["methods"] if m != base_of(m))
)
SWEPT_KEYS = [
    f"{base}:{key}" for base, spec in config["sweeps"].items() for key in spec if key != "product"
]


def ablation_table_files():
    return [
        f"{TABLES}/ablation_{base}_{ds}.{ext}"
        for base in ABLATION_BASES
        for ds in DATASETS
        for ext in ("md", "csv", "tex")
    ]


def ablation_table_reports():
    files = []
    for base in ABLATION_BASES:
        for ds in DATASETS:
            labels = {"dataset": ds, "table": f"ablation of {base}"}
            html = f"{TABLES}/ablation_{base}_{ds}.html"
            caption = "../report/ablation.rst"
            files.append(report(html, caption=caption, category="Ablations", labels=labels))
    return files


def sweep_figure_files():
    files = []
    for item in SWEPT_KEYS:
        base, key = item.split(":", 1)
        for ds in DATASETS:
            stem = f"{FIGURES}/sweep_{base}_{key}_{ds}"
            labels = {"figure": f"{key} sweep of {base} ({ds})"}
            png = report(f"{stem}.png", caption="../report/sweep.rst", category="Ablations", labels=labels)
            files += [png, f"{stem}.pdf"]
    return files


def ablation_files():
    """Every output of the ablation rule (none when the grid has no variants)."""
    if not ABLATION_BASES:
        return []
    flagged = [*ablation_table_reports(), *sweep_figure_files()]
    return ablation_table_files() + [str(f) for f in flagged]


def report_targets():
    per_dataset = [
        f"{FIGURES}/qualitative_{ds}.{ext}" for ds in DATASETS for ext in ("png", "pdf")
    ]
    return [
        *table_files(),
        *[f"{TABLES}/{ds}_{kind}.html" for ds in DATASETS for kind in TABLE_KINDS],
        *[
            f"{FIGURES}/{stem}.{ext}"
            for stem in figure_stems()
            for ext in ("png", "pdf")
        ],
        *per_dataset,
        *sensitivity_files(),
        f"results/{NAME}/report/provenance.html",
        f"results/{NAME}/report/landing.html",
        *cost_files(),
        *ablation_files(),
        f"results/{NAME}/summary.json",
    ]


# -- data preparation helpers (workflow/rules/data.smk) ------------------------------------------------------------
def data_root(wildcards):
    return f"resources/{wildcards.dataset}"


def raw_dir(wildcards):
    return f"resources/{wildcards.dataset}/raw"


def source_setting(key):
    """A setting of the dataset's source block `data.<ds>.<source>` (defaults: harness.workflow.grid.SOURCE_DEFAULTS)."""

    def get(wildcards):
        value = source_settings(config["data"][wildcards.dataset]).get(key)
        return "" if value is None else value

    return get


def manifest_ids(csv_name, drop=()):
    """Case IDs of a project manifest CSV (harness/data/manifests/), train then test, in list order."""
    with open(MANIFESTS / csv_name, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["id"] not in drop]
    order = {"train": 0, "test": 1}
    return [
        r["id"]
        for r in sorted(rows, key=lambda r: (order[r["split"]], int(r["index"])))
    ]


def la_case_files(wildcards):
    """Every LA case file: the LA manifest rule needs all 100 (a subset is fetched by naming its files)."""
    ids = manifest_ids("la_manifest.csv")
    files = [
        f"resources/{wildcards.dataset}/2018LA_Seg_Training Set/{i}/mri_norm2.h5"
        for i in ids
    ]
    if wildcards.dataset in LA_RAW:
        files += [f"resources/{wildcards.dataset}/raw_margins/{i}.json" for i in ids]
    return files


def la_raw_file(name):
    def get(wildcards):
        raw_root = source_settings(config["data"][wildcards.dataset])["raw_root"]
        return str(Path(raw_root, wildcards.case, name))

    return get


def nifti_settings(wildcards):
    """The `data.<ds>.nifti` block with its defaults, as JSON (a rerun trigger of the plan job)."""
    return json.dumps(source_settings(config["data"][wildcards.dataset]), sort_keys=True)


def nifti_source_files(case=False):
    """Input function: the source image and label files of one case (`case=True`) or of every case and dataset.json
    (the plan reads them all), so that an edited source file reruns what was prepared from it."""

    def get(wildcards):
        from harness.data.nifti_layout import NiftiSettings, find_cases

        settings = NiftiSettings.from_block(source_settings(config["data"][wildcards.dataset]))
        _, cases = find_cases(settings)
        if case:
            return [str(p) for c in cases if c.case_id == wildcards.case for p in (c.image, c.label)]
        return [str(settings.root / "dataset.json")] + [str(p) for c in cases for p in (c.image, c.label)]

    return get


def nifti_case_files(wildcards):
    """The h5 and QA files of every case of a nifti dataset (train and test, from its split)."""
    train, test = nifti_split(source_settings(config["data"][wildcards.dataset]))
    root = data_root(wildcards)
    return [f"{root}/cases/{c}.h5" for c in train + test] + [f"{root}/qa/{c}.json" for c in train + test]


def pancreas_split(wildcards):
    """The split tag resolved from `tcia.duplicates` when the DAG is built (harness.workflow.grid.pancreas_split)."""
    return data_block(config, wildcards.dataset)["split"]


def pancreas_case_files(wildcards):
    """The h5 and QA files of every case of the dataset's split variant (80 or 82)."""
    drop = PANCREAS_DUPLICATES if pancreas_split(wildcards) == SPLIT_MCNET_MINUS else ()
    ids = manifest_ids("pancreas_split.csv", drop)
    root = data_root(wildcards)
    return [f"{root}/h5/{i}_norm.h5" for i in ids] + [
        f"{root}/qa/{i}.json" for i in ids
    ]
