"""`python -m harness train`: one stage of one run (the `train` and `pretrain_<stage>` rules, workflow/rules/train.smk).

The command line is built for every job of the workflow, so nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def cmd_train(a: argparse.Namespace) -> None:
    from harness.config import load_run_config
    from harness.run.jobs import StopRequest, run_job
    from harness.run.stages import job_name

    cfg = load_run_config(Path(a.run_config))
    with run_job(Path(a.run_dir), job_name(a.stage), cfg.method, a.code):
        stop = StopRequest().install()
        import torch

        from harness.train.loop import Bookkeeping, train

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
        book = Bookkeeping(log_every=a.log_every, checkpoint_every=a.checkpoint_every, loader_workers=a.workers)
        logger.info("device %s, %d intra-op threads, %d loader workers", device, cfg.threads, book.loader_workers)
        previous = Path(a.previous_model) if a.previous_model else None
        train(
            cfg,
            Path(a.run_dir),
            device=torch.device(device),
            bookkeeping=book,
            stage=a.stage,
            stop=stop,
            previous_model=previous,
        )


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one run or one of its pre-training stages (resumes from its checkpoint)")
    p.add_argument("--run-config", required=True, help="the run's run_config.yaml (its threads are the job's)")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:1 ...")
    p.add_argument("--stage", default=None, help="a pre-training stage of the method (writes <run-dir>/<stage>/)")
    p.add_argument("--previous-model", default=None, help="the previous stage's model.pt if not in <run-dir>")
    p.add_argument("--log-every", type=int, default=10, help="training-log period (bookkeeping: no number changes)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="resume-checkpoint period (bookkeeping)")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (bookkeeping)")
    p.set_defaults(func=cmd_train, run_job=True, with_method=True)
