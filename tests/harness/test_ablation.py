"""Ablation tables and sweep figures (harness.report.ablation) and the published ablation values joined by
configuration (harness.report.ablation_published)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.report.ablation import sweep_rows, write_ablation
from harness.report.ablation_published import (
    DATA_FILE,
    extract_ablation_rows,
    load_ablation_published,
    matches,
    published_for,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_aggregate import run_rows, write_runs  # noqa: E402

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "published.csv"
SIMCVD_DEFAULTS = {
    "head_dropout": 0.1,
    "head_pool": 128,
    "use_pd": True,
    "use_contrast": True,
    "sdm_input": True,
    "use_sdm_loss": True,
    "head_pool_mode": "avg",
}


@pytest.mark.skipif(not SPEC.exists(), reason="needs the compilation of published numbers beside the repository")
def test_the_shipped_file_is_the_compilations_ablation_rows():
    shipped = load_ablation_published()
    assert shipped.equals(extract_ablation_rows(SPEC))
    assert len(shipped) == 20  # the term table (7 + the full model), 7 dropout values, 5 pooled sizes


def run(method: str, overrides: dict, **config) -> dict:
    return {
        "base": method.split("@")[0],
        "dataset": "la",
        "variant_overrides": overrides,
        "method_config": {**SIMCVD_DEFAULTS, **overrides, **config},
    }


def test_rows_are_joined_by_the_configuration_that_was_run():
    published = load_ablation_published()
    assert published_for(run("simcvd", {}), 8, published)["method"] == "SimCVD"  # fewest overrides wins
    no_pd = published_for(run("simcvd@no_pd", {"use_pd": False}), 8, published)
    assert no_pd["method"] == "SimCVD w/o L_pd" and no_pd["dice"] == 88.11
    # a variant whose name says nothing is still joined by what it ran; a wrong reading of a name is not
    assert published_for(run("simcvd@x", {"head_dropout": 0}), 8, published)["dice"] == 87.69
    assert published_for(run("simcvd@no_pd", {"use_pd": False, "tau": 0.1}), 8, published) is None
    assert published_for(run("simcvd@no_pd", {"use_pd": False}), 16, published) is None
    # w/o L_contrast + L_pd needs both switches off
    only_contrast = run("simcvd@c", {"use_contrast": False})
    row = published[published["method"] == "SimCVD w/o L_contrast + L_pd"].iloc[0]
    assert not matches(only_contrast, row)
    assert matches(run("simcvd@cp", {"use_contrast": False, "use_pd": False}), row)


def write_run_configs(tmp_path: Path, settings: dict[str, dict]) -> list[Path]:
    paths = []
    for method, overrides in settings.items():
        path = tmp_path / "cfg" / method / "run_config.yaml"
        path.parent.mkdir(parents=True)
        base = method.split("@")[0]
        method_config = {**SIMCVD_DEFAULTS, **overrides} if base == "simcvd" else {"ema_decay": 0.99}
        path.write_text(
            yaml.safe_dump(
                {"dataset": "la", "method": method, "variant_overrides": overrides, "method_config": method_config}
            )
        )
        paths.append(path)
    return paths


@pytest.fixture
def ablation_results(tmp_path):
    dice = {
        "mean_teacher": 0.80,
        "simcvd": 0.88,
        "simcvd@no_pd": 0.86,
        "simcvd@head_dropout=0": 0.85,
        "simcvd@head_dropout=0.5": 0.84,
    }
    runs = [
        run_rows("la", m, 8, 80, seed, [d + 0.01 * seed, d - 0.02, d + 0.005 * seed])
        for m, d in dice.items()
        for seed in (1, 2)
    ]
    csvs = write_runs(tmp_path, runs)
    configs = write_run_configs(
        tmp_path,
        {
            "mean_teacher": {},
            "simcvd": {},
            "simcvd@no_pd": {"use_pd": False},
            "simcvd@head_dropout=0": {"head_dropout": 0},
            "simcvd@head_dropout=0.5": {"head_dropout": 0.5},
        },
    )
    return csvs, configs, list(dice)


def test_ablation_table_rows_deltas_tests_and_published_values(tmp_path, ablation_results):
    csvs, configs, methods = ablation_results
    write_ablation(
        csvs, configs, tmp_path / "tables", tmp_path / "figures", methods=methods, sweeps=["simcvd:head_dropout"]
    )
    table = pd.read_csv(tmp_path / "tables" / "ablation_simcvd_la.csv", dtype=str)
    assert list(table["Variant"]) == [
        "mean_teacher",
        "simcvd (base)",
        "simcvd@no_pd",
        "simcvd@head_dropout=0",
        "simcvd@head_dropout=0.5",
    ]
    rows = table.set_index("Variant")
    assert rows.loc["simcvd@no_pd", "Δ Dice vs base"] == "-2.00"  # the per-case paired difference, in points
    assert rows.loc["mean_teacher", "Δ Dice vs base"] == "-8.00"
    assert rows.loc["simcvd (base)", "Δ Dice vs base"] == "–"
    assert rows.loc["simcvd@no_pd", "p (Wilcoxon, Holm)"] != "–"
    published = rows["Published Dice (%)"].to_dict()
    assert published == {
        "mean_teacher": "84.24",
        "simcvd (base)": "89.03",
        "simcvd@no_pd": "88.11",
        "simcvd@head_dropout=0": "87.69",
        "simcvd@head_dropout=0.5": "86.67",
    }
    assert rows.loc["simcvd@no_pd", "Overrides"] == "use_pd=false"
    for ext, name in (("md", "simcvd@no_pd"), ("html", "simcvd@no_pd"), ("tex", r"simcvd@no\_pd")):
        assert name in (tmp_path / "tables" / f"ablation_simcvd_la.{ext}").read_text()
    assert (tmp_path / "figures" / "sweep_simcvd_head_dropout_la.png").stat().st_size > 0


def test_sweep_points_are_the_base_run_and_the_variants_of_that_key_only(tmp_path, ablation_results):
    from harness.report.ablation import read_settings
    from harness.report.aggregate import load_per_case

    csvs, configs, _ = ablation_results
    points = sweep_rows(load_per_case(csvs), read_settings(configs), "simcvd", "head_dropout", "la")
    assert sorted(set(points["method"])) == ["simcvd", "simcvd@head_dropout=0", "simcvd@head_dropout=0.5"]
    assert sorted(points["value"].unique()) == [0, 0.1, 0.5] and len(points) == 6  # two seeds each
    means = points.groupby("value")["dice"].mean()
    seed_1, seed_2 = (0.85 + 0.82 + 0.845) / 3, (0.86 + 0.82 + 0.85) / 3  # per-run means over the three cases
    assert means[0.5] == pytest.approx((seed_1 + seed_2) / 2)


def test_published_file_is_valid_json_overrides():
    for text in pd.read_csv(DATA_FILE)["overrides"]:
        assert isinstance(json.loads(text), dict)
