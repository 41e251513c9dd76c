"""`python -m harness predict | evaluate` (workflow/rules/evaluate.smk). The command line is built for every job of
the workflow, so nothing heavy is imported until a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.evaluate.options import EMPTY_PRED_POLICIES, SPACING_HELP, spacing_arg, spacing_value


def device_arg(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cmd_predict(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.run.jobs import run_job

    cfg = load_run_config(Path(a.run_config))
    out = Path(a.out)
    with run_job(out.parent, "predict", cfg.method, a.code):
        from harness.evaluate.predict import predict_cases

        predict_cases(
            cfg,
            Path(a.model),
            out,
            stride=tuple(a.stride),
            windows_per_batch=a.windows,
            spacing_mm=spacing_arg(a.spacing),
            device=device_arg(a.device),
            code=a.code.identity,
        )


def cmd_evaluate(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.run.jobs import run_job

    cfg = load_run_config(Path(a.run_config))
    out_csv = Path(a.out_csv)
    with run_job(out_csv.parent, "evaluate", cfg.method, a.code):
        from harness.evaluate.score import evaluate_run

        evaluate_run(
            cfg,
            Path(a.predictions),
            Path(a.run_info),
            out_csv,
            Path(a.out_json),
            spacing_mm=spacing_arg(a.spacing),
            empty_pred=a.empty_pred,
            code=a.code.identity,
        )


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="sliding-window prediction of the test cases to NIfTI")
    p.add_argument("--run-config", required=True, help="run_config.yaml of the run (its threads are the job's)")
    p.add_argument("--spacing", type=spacing_value, nargs="+", required=True, help=SPACING_HELP)
    p.add_argument("--stride", type=int, nargs=3, required=True, help="sliding-window stride x y z (voxels)")
    p.add_argument("--windows", type=int, default=4, help="windows per forward pass")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="folder for <case>.nii.gz")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict, run_job=True, with_method=True)

    p = sub.add_parser("evaluate", help="per-case metrics of saved predictions")
    p.add_argument("--run-config", required=True, help="run_config.yaml of the run")
    p.add_argument("--spacing", type=spacing_value, nargs="+", required=True, help=SPACING_HELP)
    p.add_argument("--empty-pred", choices=EMPTY_PRED_POLICIES, required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--run-info", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", required=True)
    p.set_defaults(func=cmd_evaluate, run_job=True)
