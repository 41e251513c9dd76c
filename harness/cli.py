"""`python -m harness <subcommand>`: the only entry point the Snakemake rules call (DESIGN.md §3).

Each subcommand parses its flags and calls one API function; the logic lives in the importable modules.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("harness")


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def cmd_make_synthetic(a: argparse.Namespace) -> None:
    from harness.data.synthetic import write_synthetic_la

    out = Path(a.out)
    manifest = write_synthetic_la(out, n_train=a.n_train, n_test=a.n_test, seed=a.seed)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps({"source": "synthetic", "seed": a.seed, **manifest}, indent=2, default=str))
    tmp.replace(out / "manifest.json")


def cmd_resolve_run(a: argparse.Namespace) -> None:
    from harness.config import resolve_run, write_yaml

    write_yaml(resolve_run(json.loads(a.params)).to_dict(), Path(a.out))


def cmd_check_config(a: argparse.Namespace) -> None:
    import yaml

    from harness.config import cell_params, check_grid, grid_cells, resolve_run
    from harness.registry import list_methods

    config = yaml.safe_load(Path(a.config).read_text())
    check_grid(config, list_methods())
    cells = grid_cells(config)
    for cell in cells:
        resolve_run(cell_params(config, cell))
    logger.info("%s: %d runs resolve", a.config, len(cells))


def cmd_train(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.loop import train

    _threads(a.threads)
    train(load_run_config(Path(a.run_config)), Path(a.run_dir), device=_device(a.device))


def cmd_predict(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.evaluate import predict_cases

    _threads(a.threads)
    cfg = load_run_config(Path(a.run_config))
    predict_cases(
        cfg,
        Path(a.model),
        Path(a.out),
        stride=tuple(a.stride),
        windows_per_batch=a.windows,
        spacing_mm=tuple(a.spacing),
        device=_device(a.device),
    )


def cmd_evaluate(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.evaluate import evaluate_cases, write_results

    cfg = load_run_config(Path(a.run_config))
    run_info = json.loads(Path(a.run_info).read_text())
    spacing = tuple(a.spacing)
    rows = evaluate_cases(cfg, Path(a.predictions), spacing_mm=spacing, empty_pred=a.empty_pred, run_info=run_info)
    settings = {"spacing_mm": spacing, "empty_pred": a.empty_pred}
    write_results(rows, Path(a.out_csv), Path(a.out_json), run_info, settings)


def cmd_aggregate(a: argparse.Namespace) -> None:
    from harness import provenance
    from harness.tables import write_tables

    write_tables([Path(p) for p in a.inputs], Path(a.out), provenance=provenance.collect(config_name=a.name))


def cmd_figures(a: argparse.Namespace) -> None:
    from harness.aggregate import load_per_case, per_run
    from harness.plots import write_figures

    per_case = load_per_case([Path(p) for p in a.inputs])
    write_figures(per_run(per_case), per_case, Path(a.out))


def _eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-config", required=True, help="run_config.yaml of the run")
    p.add_argument("--spacing", type=float, nargs=3, required=True, help="voxel size x y z in mm")


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

    p = sub.add_parser("aggregate", help="per-case CSVs -> tables (md/csv/tex), runs.csv, summary.json")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--name", required=True, help="the benchmark's name (config key `name`)")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("figures", help="per-case CSVs -> seaborn figures")
    p.add_argument("--inputs", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from harness.config import ConfigError

    try:
        args.func(args)
    except (ConfigError, FileNotFoundError, KeyError) as err:
        logger.error("%s", err)
        return 2
    return 0
