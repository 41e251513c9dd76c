"""Variants and sweeps through the whole DAG (docs/ablations.md): the tiny CI grid with one named variant and a
two-point sweep of mean_teacher (no code: any Config key can be swept) produces its own runs, the ablation table and
the sweep figure; editing one variant's overrides reruns that variant alone."""

from __future__ import annotations

import re

import pytest
import yaml
from workflow_tools import REPO, run_snakemake


def ablation_config(fast_decay: float) -> dict:
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["methods"] = ["mean_teacher", "mean_teacher@fast"]
    cfg["variants"] = {"mean_teacher": {"fast": {"ema_decay": fast_decay}}}
    cfg["sweeps"] = {"mean_teacher": {"ema_decay": [0.99, 0.5]}}  # 0.99 is the default: the mean_teacher run
    return cfg


def planned_methods(text: str, rule: str) -> set[str]:
    """The `method` wildcard of every planned job of `rule` in a dry run's output."""
    blocks = re.findall(rf"^rule {rule}:\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    return {m for block in blocks for m in re.findall(r"method=([^,\s]+)", block)}


@pytest.mark.slow
def test_a_variant_and_a_sweep_run_end_to_end_and_rerun_alone(tmp_path):
    config = tmp_path / "ablation.yaml"
    config.write_text(yaml.safe_dump(ablation_config(0.9)))
    work = tmp_path / "work"
    run_snakemake(work, config)

    out = work / "results" / "ci"
    runs = out / "runs" / "synthetic"
    assert sorted(p.name for p in runs.iterdir()) == ["mean_teacher", "mean_teacher@ema_decay=0.5", "mean_teacher@fast"]
    run_config = yaml.safe_load((runs / "mean_teacher@fast" / "labeled~2" / "seed~1" / "run_config.yaml").read_text())
    assert run_config["variant_overrides"] == {"ema_decay": 0.9} and run_config["method_config"]["ema_decay"] == 0.9

    table = (out / "tables" / "ablation_mean_teacher_synthetic.md").read_text()
    for row in ("mean_teacher (base)", "mean_teacher@fast", "mean_teacher@ema_decay=0.5", "ema_decay=0.9"):
        assert row in table, row
    assert (out / "figures" / "sweep_mean_teacher_ema_decay_synthetic.png").stat().st_size > 0
    assert "mean_teacher@fast" in (out / "tables" / "synthetic_voxel.md").read_text()

    config.write_text(yaml.safe_dump(ablation_config(0.8)))
    dry = run_snakemake(work, config, "-n")
    text = dry.stdout + dry.stderr
    assert planned_methods(text, "run_config") == {"mean_teacher@fast"}
    assert planned_methods(text, "train") == {"mean_teacher@fast"}
