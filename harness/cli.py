"""`python -m harness <subcommand>`: the only entry point the Snakemake rules call (docs/architecture.md).

Each subcommand parses its flags and calls one API function; the logic lives in the importable modules.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("harness")
#: The project root (holds harness/ and methods/).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: How long a job waits for another job holding its run folder (an orphan of a killed workflow stops within seconds).
JOB_LOCK_WAIT_S = 60.0


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


SPACING_HELP = "voxel size x y z in mm, or `data`: the prepared dataset's (manifest.json spacing_mm)"


def _spacing(value: str) -> float | str:
    return value if value == "data" else float(value)


def spacing_arg(values: list) -> tuple[float, float, float] | None:
    """`--spacing x y z` as a tuple, `--spacing data` as None (the prepared data's voxel size)."""
    if values == ["data"]:
        return None
    if len(values) != 3 or any(isinstance(v, str) for v in values):
        raise SystemExit(f"--spacing: give x y z in mm, or `data`; got {values}")
    return tuple(values)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_make_synthetic(a: argparse.Namespace) -> None:
    from harness.data.synthetic import write_synthetic_la

    write_synthetic_la(a.out, n_train=a.n_train, n_test=a.n_test, seed=a.seed)  # writes <out>/manifest.json last


def cmd_fetch_la(a: argparse.Namespace) -> None:
    from harness.data import la
    from harness.data.download import DataError

    if not a.case and not a.lists:
        raise DataError("fetch-la: give --case ID ... and/or --lists")
    for case_id in a.case:
        la.fetch_case(a.root, case_id, a.base_url, retries=a.retries, progress=not a.no_progress)
    if a.lists:
        la.fetch_lists(a.root, a.base_url, retries=a.retries)


def cmd_la_raw(a: argparse.Namespace) -> None:
    from harness.data import la

    case = la.manifest_case(la.read_manifest(), a.case)
    la.preprocess_raw_case(Path(a.raw_root) / a.case, a.root, a.case, seed=a.seed, expected_fg=case.fg_voxels)


def cmd_la_lists(a: argparse.Namespace) -> None:
    from harness.data import la

    la.write_lists_from_manifest(a.root)


def cmd_la_manifest(a: argparse.Namespace) -> None:
    from harness.data import la

    la.write_manifest(a.root, source=a.source, crop_seed=a.crop_seed)


def cmd_tcia_series(a: argparse.Namespace) -> None:
    from harness.data import tcia

    tcia.build_series_index(
        a.out, api_url=a.api_url or None, collection=a.collection, dicom_root=a.dicom_root or None, retries=a.retries
    )


def cmd_tcia_fetch(a: argparse.Namespace) -> None:
    from harness.data import tcia

    tcia.fetch_series(a.index, a.case, a.out, api_url=a.api_url, retries=a.retries, progress=not a.no_progress)


def cmd_pancreas_labels(a: argparse.Namespace) -> None:
    from harness.data import tcia

    tcia.fetch_labels(a.url, a.raw_dir, sha256=a.sha256 or None, retries=a.retries, progress=not a.no_progress)


def cmd_pancreas_case(a: argparse.Namespace) -> None:
    import SimpleITK as sitk

    from harness.data import pancreas

    if a.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    pancreas.prepare_case(a.case, a.dicom, a.labels, a.root)


def cmd_pancreas_manifest(a: argparse.Namespace) -> None:
    from harness.data import pancreas

    pancreas.write_manifest(a.root, split=a.split, policy=a.policy)


def _data_parsers(sub: argparse._SubParsersAction) -> None:
    """Data preparation subcommands (workflow/rules/data.smk)."""
    p = sub.add_parser("fetch-la", help="download + verify released LA cases and/or the lists (protocol §1.2)")
    p.add_argument("--root", required=True)
    p.add_argument("--base-url", required=True, help="URL or local folder holding train.list and 2018LA_Seg_...")
    p.add_argument("--case", nargs="*", default=[], help="LA case IDs")
    p.add_argument("--lists", action="store_true", help="also fetch train.list and test.list")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_fetch_la)

    p = sub.add_parser("la-raw", help="preprocess one raw LA case (lgemri/laendo.nrrd), seeded margins (§1.5)")
    p.add_argument("--root", required=True)
    p.add_argument("--raw-root", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.set_defaults(func=cmd_la_raw)

    p = sub.add_parser("la-lists", help="write the LA lists from the project manifest (raw_nrrd source)")
    p.add_argument("--root", required=True)
    p.set_defaults(func=cmd_la_lists)

    p = sub.add_parser("la-manifest", help="verify a complete LA root and write manifest.json")
    p.add_argument("--root", required=True)
    p.add_argument("--source", choices=["released_h5", "raw_nrrd"], required=True)
    p.add_argument("--crop-seed", type=lambda v: int(v) if v else None, default=None, help="raw_nrrd margin seed")
    p.set_defaults(func=cmd_la_manifest)

    p = sub.add_parser("tcia-series", help="index the Pancreas-CT CT series (TCIA getSeries and/or a local copy)")
    p.add_argument("--out", required=True)
    p.add_argument("--api-url", default="", help="NBIA API base URL ('' = local copy only)")
    p.add_argument("--collection", required=True)
    p.add_argument("--dicom-root", default="", help="local DICOM folder holding PANCREAS_<nnnn>/ ('' = none)")
    p.add_argument("--retries", type=int, default=3)
    p.set_defaults(func=cmd_tcia_series)

    p = sub.add_parser("tcia-fetch", help="one case's DICOM series into a folder (TCIA getImage or local links)")
    p.add_argument("--index", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--api-url", default="")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tcia_fetch)

    p = sub.add_parser("pancreas-labels", help="fetch (or use the hand-placed) label archive and extract it")
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--sha256", default="")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_pancreas_labels)

    p = sub.add_parser("pancreas-case", help="MC-Net preprocessing of one Pancreas case (protocol §2.3)")
    p.add_argument("--case", required=True)
    p.add_argument("--dicom", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--threads", type=int, default=None, help="SimpleITK threads (default: all cores)")
    p.set_defaults(func=cmd_pancreas_case)

    p = sub.add_parser("pancreas-manifest", help="check all Pancreas cases, write the lists and manifest.json")
    p.add_argument("--root", required=True)
    p.add_argument("--split", choices=["mcnet", "mcnet_minus_0025_0070"], required=True)
    p.add_argument("--policy", choices=["auto", "require", "drop"], required=True)
    p.set_defaults(func=cmd_pancreas_manifest)


def cmd_nifti_plan(a: argparse.Namespace) -> None:
    from harness.config import ConfigError
    from harness.data import nifti

    try:
        block = json.loads(a.settings)
    except json.JSONDecodeError as err:
        raise ConfigError(f"nifti-plan --settings: not JSON ({err}): {a.settings!r}") from err
    nifti.plan_dataset(nifti.NiftiSettings.from_block(block), Path(a.out))


def cmd_nifti_case(a: argparse.Namespace) -> None:
    import SimpleITK as sitk

    from harness.data import nifti

    if a.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    nifti.prepare_case(a.case, nifti.read_plan(Path(a.out)), Path(a.out))


def cmd_nifti_manifest(a: argparse.Namespace) -> None:
    from harness.data import nifti

    nifti.write_manifest(Path(a.out))


def _nifti_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the `nifti` source: an MSD or nnU-Net v2 raw dataset (harness/data/nifti.py)."""
    p = sub.add_parser("nifti-plan", help="find the cases, fix the split, spacing and normalisation: ROOT/plan.json")
    p.add_argument("--settings", required=True, help="the data.<dataset>.nifti block as JSON")
    p.add_argument("--out", required=True, help="the prepared dataset's folder (ROOT)")
    p.set_defaults(func=cmd_nifti_plan)

    p = sub.add_parser("nifti-case", help="prepare one case of ROOT/plan.json: cases/<ID>.h5, qa/<ID>.{png,json}")
    p.add_argument("--out", required=True, help="the prepared dataset's folder (ROOT, holds plan.json)")
    p.add_argument("--case", required=True)
    p.add_argument("--threads", type=int, default=None, help="SimpleITK threads (default: all cores)")
    p.set_defaults(func=cmd_nifti_case)

    p = sub.add_parser("nifti-manifest", help="check every case of ROOT/plan.json, write the lists and manifest.json")
    p.add_argument("--out", required=True, help="the prepared dataset's folder (ROOT)")
    p.set_defaults(func=cmd_nifti_manifest)


def cmd_resolve_run(a: argparse.Namespace) -> None:
    from harness.method.build import write_run_config

    write_run_config(json.loads(a.params), Path(a.out))


def cmd_check_config(a: argparse.Namespace) -> None:
    from harness.config import ConfigError
    from harness.method.build import resolve_run
    from harness.workflow.grid import cell_params, grid_cells
    from harness.workflow.method_table import read_methods
    from harness.workflow.validate import load_config_file, validate_config

    config = load_config_file(a.config)  # its errors name the file (and line)
    try:
        validate_config(config, read_methods(PROJECT_ROOT))  # the Snakefile's validator (harness.workflow.validate)
    except ConfigError as err:
        raise ConfigError(f"{a.config}: {err}") from None
    cells = grid_cells(config)
    for cell in cells:
        resolve_run(cell_params(config, cell))
    logger.info("%s: %d runs resolve", a.config, len(cells))


@contextlib.contextmanager
def _run_job(run_dir: Path, job: str, method: str) -> Iterator[None]:
    """What every job of a run does around its work: delete the results derived from what it recomputes and note its
    start in the run's journal (`harness.workflow.lineage`) before SIGINT/SIGTERM may stop it, then hold the run
    folder's lock (waiting for an orphaned writer to stop) and stop when its workflow is gone."""
    from harness.config import VARIANT_SEPARATOR
    from harness.workflow.job_control import RunLock, release_stop_signals, watch_workflow
    from harness.workflow.lineage import start_job
    from harness.workflow.method_table import read_methods

    deleted = start_job(run_dir, job, read_methods(PROJECT_ROOT)[method.split(VARIANT_SEPARATOR, 1)[0]].stages)
    release_stop_signals()
    if deleted:
        logger.info("%s: removed results derived from what this job recomputes: %s", run_dir, ", ".join(deleted))
    with RunLock(run_dir, job, wait_s=JOB_LOCK_WAIT_S):
        watch_workflow()
        yield


def cmd_train(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.workflow.job_control import StopRequest

    cfg = load_run_config(Path(a.run_config))
    job = f"pretrain_{a.stage}" if a.stage else "train"
    with _run_job(Path(a.run_dir), job, cfg.method):
        stop = StopRequest().install()
        import torch

        from harness.train.loop import train
        from harness.train.optim import split_threads

        device = _device(a.device)
        intra_op, workers = split_threads(a.threads or torch.get_num_threads(), device, cfg.protocol.num_workers)
        torch.set_num_threads(intra_op)
        logger.info("device %s, %d intra-op threads, %d loader workers", device, intra_op, workers)
        previous = Path(a.previous_model) if a.previous_model else None
        train(cfg, Path(a.run_dir), device=device, workers=workers, stage=a.stage, stop=stop, previous_model=previous)


def cmd_predict(a: argparse.Namespace) -> None:
    from harness.config import load_run_config

    cfg = load_run_config(Path(a.run_config))
    out = Path(a.out)
    with _run_job(out.parent, "predict", cfg.method):
        from harness.evaluate.predict import predict_cases

        _threads(a.threads)
        predict_cases(
            cfg,
            Path(a.model),
            out,
            stride=tuple(a.stride),
            windows_per_batch=a.windows,
            spacing_mm=spacing_arg(a.spacing),
            device=_device(a.device),
        )


def cmd_evaluate(a: argparse.Namespace) -> None:
    from harness.config import load_run_config

    cfg = load_run_config(Path(a.run_config))
    out_csv = Path(a.out_csv)
    with _run_job(out_csv.parent, "evaluate", cfg.method):
        from harness.evaluate.predictions import read_record
        from harness.evaluate.score import evaluate_cases, write_results

        run_info = json.loads(Path(a.run_info).read_text())
        predictions = Path(a.predictions)
        rows = evaluate_cases(
            cfg, predictions, spacing_mm=spacing_arg(a.spacing), empty_pred=a.empty_pred, run_info=run_info
        )
        record = read_record(predictions)
        settings = {
            **record["settings"],
            "spacing_mm": record["settings"]["spacing_mm"],
            "empty_pred": a.empty_pred,
            "model_sha256": record["model_sha256"],
            "data_manifest_sha256": record["data_manifest_sha256"],
        }
        write_results(rows, out_csv, Path(a.out_json), run_info, settings)


#: Commands that are jobs of a run folder (`_run_job`).
RUN_JOBS = (cmd_train, cmd_predict, cmd_evaluate)


# -- results tables, figures and the report (issue #7) ---------------------------------------------------------------
def _table_options(a: argparse.Namespace):
    from harness.report.comparison_tables import TableOptions

    return TableOptions(
        published_source=a.published_source,
        reference_method=a.reference,
        n_resamples=a.bootstrap_samples,
        bootstrap_seed=a.bootstrap_seed,
        alternative=a.alternative,
    )


def cmd_report_tables(a: argparse.Namespace) -> None:
    from harness import provenance
    from harness.report.tables import write_tables

    prov = provenance.collect(config_name=a.name)
    write_tables([Path(p) for p in a.inputs], Path(a.out), provenance=prov, options=_table_options(a))


def cmd_report_figures(a: argparse.Namespace) -> None:
    from harness.report.aggregate import load_per_case, per_run
    from harness.report.plots import load_train_logs, write_figures
    from harness.report.published import NO_SOURCE, SOURCES, check_source, load_published

    check_source(a.published_source)
    published, label = None, ""
    if a.published_source != NO_SOURCE:
        table = load_published()
        published, label = table[table["source_id"] == a.published_source], SOURCES[a.published_source].label
    per_case = load_per_case([Path(p) for p in a.inputs])
    logs = load_train_logs([Path(p) for p in a.run_info]) if a.run_info else None
    write_figures(per_run(per_case), per_case, Path(a.out), published=published, published_label=label, train_logs=logs)


def cmd_qualitative(a: argparse.Namespace) -> None:
    from harness.report.plots import write_qualitative

    write_qualitative([Path(p) for p in a.run_configs], Path(a.out), case=a.case or None, n_slices=a.slices)


def cmd_sensitivity(a: argparse.Namespace) -> None:
    from harness.report.sensitivity import write_sensitivity

    write_sensitivity(
        [Path(p) for p in a.run_configs],
        Path(a.out_csv),
        Path(a.tables),
        spacing_mm=spacing_arg(a.spacing),
        policy=a.empty_pred,
        workers=a.workers,
    )


def cmd_provenance_report(a: argparse.Namespace) -> None:
    from harness.report.provenance_page import write_provenance

    write_provenance([Path(p) for p in a.run_info], Path(a.out))


def cmd_cost_table(a: argparse.Namespace) -> None:
    from harness.report.cost_table import write_cost_tables

    patterns = dict(item.split("=", 1) for item in a.pattern)
    write_cost_tables(patterns, [Path(p) for p in a.inputs], [Path(p) for p in a.run_info], Path(a.out))


def _report_options(p: argparse.ArgumentParser) -> None:
    """Options of the report commands; their values are checked when the command runs (`TableOptions`,
    `check_source`), so building the parser imports nothing heavy: every job of the workflow builds it."""
    p.add_argument("--published-source", default="simcvd", help="a key of harness.report.published.SOURCES or none")
    p.add_argument("--reference", default="simcvd", help="reference method of the paired tests")
    p.add_argument("--bootstrap-samples", type=int, default=2000, help="bootstrap resamples per cell")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap generators")
    p.add_argument("--alternative", default="two-sided", help="two-sided, less or greater, for d = method - reference")


def _add_report_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report-tables", help="per-case CSVs -> results, published, statistics tables + summary.json")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", required=True, help="results folder (tables/ is created in it)")
    p.add_argument("--name", required=True, help="the benchmark's name (config key `name`)")
    _report_options(p)
    p.set_defaults(func=cmd_report_tables)

    p = sub.add_parser("report-figures", help="per-case CSVs + training logs -> figures (PNG and PDF)")
    p.add_argument("--inputs", nargs="+", required=True, help="metrics_per_case.csv files")
    p.add_argument("--run-info", nargs="*", default=[], help="run_info.json files (train_log.jsonl beside each)")
    p.add_argument("--out", required=True)
    p.add_argument("--published-source", default="simcvd", help="published source table for the markers, or none")
    p.set_defaults(func=cmd_report_figures)

    p = sub.add_parser("qualitative", help="overlay figure of one test case from saved predictions")
    p.add_argument("--run-configs", nargs="+", required=True, help="run_config.yaml files (predictions/ beside)")
    p.add_argument("--out", required=True, help="destination PNG (a PDF is written beside it)")
    p.add_argument("--case", default="", help="test case ID (default: the first of test.list)")
    p.add_argument("--slices", type=int, default=3)
    p.set_defaults(func=cmd_qualitative)

    p = sub.add_parser("sensitivity", help="protocol-sensitivity table of one dataset from saved predictions")
    p.add_argument("--run-configs", nargs="+", required=True)
    p.add_argument("--spacing", type=_spacing, nargs="+", required=True, help=SPACING_HELP)
    p.add_argument("--empty-pred", choices=["worst_case", "nan", "reference_zero"], required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--tables", required=True, help="folder of <dataset>_sensitivity.{md,csv,tex,html}")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("provenance-report", help="HTML page of every run's configuration and provenance")
    p.add_argument("--run-info", nargs="+", required=True)
    p.add_argument("--out", required=True, help="destination HTML (a CSV is written beside it)")
    p.set_defaults(func=cmd_provenance_report)

    p = sub.add_parser("cost-table", help="Snakemake benchmark files + run_info.json -> cost table")
    p.add_argument("--pattern", nargs="+", required=True, help="RULE=PATTERN with {dataset} {method} {n} {seed}")
    p.add_argument("--inputs", nargs="+", required=True, help="benchmark files (.tsv or .jsonl)")
    p.add_argument("--run-info", nargs="+", required=True, help="run_info.json of every benchmarked run (device)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_cost_table)
    from harness.report import landing_page

    landing_page.add_command(sub)  # the report's landing page: its own module
    from harness.report import ablation_command

    ablation_command.add_command(sub)  # ablation tables and sweep figures (docs/ablations.md)


def _eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-config", required=True, help="run_config.yaml of the run")
    p.add_argument("--spacing", type=_spacing, nargs="+", required=True, help=SPACING_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-synthetic", help="write the synthetic LA-like dataset in the released LA layout")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--n-train", type=int, required=True)
    p.add_argument("--n-test", type=int, required=True)
    p.set_defaults(func=cmd_make_synthetic)
    _data_parsers(sub)
    _nifti_parsers(sub)

    p = sub.add_parser("resolve-run", help="merge and validate one grid cell's parameters into run_config.yaml")
    p.add_argument("--params", required=True, help="the cell's parameters as JSON")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_resolve_run)

    p = sub.add_parser("check-config", help="validate a config and resolve every run of its grid without training")
    p.add_argument("config")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("train", help="train one run (resumes from checkpoint_last.pt)")
    p.add_argument("--run-config", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--stage", default=None, help="a pre-training stage of the method (writes <run-dir>/<stage>/)")
    p.add_argument("--previous-model", default=None, help="the previous stage's model.pt if not in <run-dir>")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="sliding-window prediction of the test cases to NIfTI")
    _eval_flags(p)
    p.add_argument("--stride", type=int, nargs=3, required=True, help="sliding-window stride x y z (voxels)")
    p.add_argument("--windows", type=int, default=4, help="windows per forward pass")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="folder for <case>.nii.gz")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="per-case metrics of saved predictions")
    _eval_flags(p)
    p.add_argument("--empty-pred", choices=["worst_case", "nan", "reference_zero"], required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--run-info", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", required=True)
    p.set_defaults(func=cmd_evaluate)

    _add_report_commands(sub)
    from harness.evaluate import external

    external.add_command(sub)  # evaluate-checkpoint: its own module
    from harness.gpucheck import command as gpu_check

    gpu_check.add_command(sub)  # gpu-check: its own package (docs/gpu.md)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from harness.config import ConfigError
    from harness.data.download import DataError
    from harness.workflow.job_control import JobStopped, RunBusyError, release_stop_signals
    from harness.workflow.lineage import LineageError

    if args.func not in RUN_JOBS:
        release_stop_signals()  # held back by harness.__main__ until a run job has invalidated its downstream
    try:
        args.func(args)
    except (ConfigError, DataError, FileNotFoundError, KeyError, LineageError, RunBusyError) as err:
        logger.error("%s", err)
        return 2
    except JobStopped as err:
        logger.warning("%s", err)
        return 3
    return 0
