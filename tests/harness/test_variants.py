"""Method variants and sweeps as grid entries (harness.workflow.variants, docs/ablations.md)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError
from harness.method.build import resolve_run
from harness.run.folder import RunId
from harness.run.method_table import read_methods
from harness.workflow.grid import cell_params, grid_cells
from harness.workflow.validate import load_config_file, validate_config
from harness.workflow.variants import sweep_name

REPO = Path(__file__).resolve().parents[2]
METHODS = read_methods(REPO)


def tiny(**extra) -> dict:
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["methods"] = ["supervised", "mean_teacher"]
    return {**cfg, **copy.deepcopy(extra)}


def test_a_sweep_expands_into_variants_and_its_default_value_is_the_base_run():
    cfg = validate_config(tiny(sweeps={"mean_teacher": {"ema_decay": [0.9, 0.99, 0.5]}}), METHODS)
    # 0.99 is mean_teacher's Config default: that point is the mean_teacher run itself
    assert cfg["methods"] == ["supervised", "mean_teacher", "mean_teacher@ema_decay=0.9", "mean_teacher@ema_decay=0.5"]
    assert cfg["variants"]["mean_teacher"]["ema_decay=0.5"] == {"ema_decay": 0.5}
    assert validate_config(copy.deepcopy(cfg), METHODS)["methods"] == cfg["methods"]  # idempotent


def test_the_base_value_of_a_sweep_is_the_configured_one_not_only_the_default():
    cfg = tiny(
        method_overrides={"mean_teacher": {"ema_decay": 0.9}}, sweeps={"mean_teacher": {"ema_decay": [0.9, 0.99]}}
    )
    assert validate_config(cfg, METHODS)["methods"][2:] == ["mean_teacher@ema_decay=0.99"]


def test_several_keys_vary_one_at_a_time_unless_product_is_asked():
    sweep = {"ema_decay": [0.5, 0.9], "consistency_weight": [1.0, 2.0]}
    one_at_a_time = validate_config(tiny(sweeps={"ua_mt": sweep}, methods=["ua_mt"]), METHODS)["methods"]
    assert len(one_at_a_time) == 1 + 4
    product = validate_config(tiny(sweeps={"ua_mt": {**sweep, "product": True}}, methods=["ua_mt"]), METHODS)
    assert "ua_mt@ema_decay=0.5+consistency_weight=2.0" in product["methods"] and len(product["methods"]) == 1 + 4
    assert sweep_name({"a": True, "b": [150, 40.0]}) == "a=true+b=150_40.0"


def test_a_variant_runs_with_its_overrides_on_top_of_the_methods_and_records_them():
    cfg = validate_config(
        tiny(
            methods=["mean_teacher", "mean_teacher@slow"],
            method_overrides={"mean_teacher": {"ema_decay": 0.9, "protocol": {"lr": 0.02}}},
            variants={"mean_teacher": {"slow": {"ema_decay": 0.999, "protocol": {"iterations": 6}}}},
        ),
        METHODS,
    )
    params = cell_params(cfg, RunId("synthetic", "mean_teacher@slow", 2, 1))
    assert params["method_overrides"] == {"ema_decay": 0.999}
    assert params["protocol"]["lr"] == 0.02 and params["protocol"]["iterations"] == 6
    run = resolve_run(params)
    assert run.method == "mean_teacher@slow" and run.base_method == "mean_teacher"
    assert run.method_config["ema_decay"] == 0.999
    assert run.variant_overrides == {"ema_decay": 0.999, "protocol": {"iterations": 6}}
    base = cell_params(cfg, RunId("synthetic", "mean_teacher", 2, 1))
    assert base["method_overrides"] == {"ema_decay": 0.9} and base["variant_overrides"] == {}


def test_a_datasets_method_overrides_apply_to_that_datasets_runs_only_under_a_variants():
    data = tiny()["data"]
    cfg = tiny(
        methods=["mean_teacher", "mean_teacher@slow"],
        datasets={
            "synthetic": {"labeled": [2], "upper_bound": False},
            "other": {"labeled": [2], "upper_bound": False, "method_overrides": {"mean_teacher": {"ema_decay": 0.5}}},
        },
        data={**data, "other": data["synthetic"]},
        method_overrides={"mean_teacher": {"ema_decay": 0.9, "protocol": {"lr": 0.02}}},
        variants={"mean_teacher": {"slow": {"ema_decay": 0.999}}},
    )
    cfg = validate_config(cfg, METHODS)
    assert cell_params(cfg, RunId("other", "mean_teacher", 2, 1))["method_overrides"] == {"ema_decay": 0.5}
    assert cell_params(cfg, RunId("synthetic", "mean_teacher", 2, 1))["method_overrides"] == {"ema_decay": 0.9}
    assert cell_params(cfg, RunId("other", "mean_teacher@slow", 2, 1))["method_overrides"] == {"ema_decay": 0.999}
    assert cell_params(cfg, RunId("other", "mean_teacher", 2, 1))["protocol"]["lr"] == 0.02


def test_a_misspelt_key_of_a_datasets_method_overrides_is_refused_where_it_is_written():
    cfg = tiny()
    cfg["datasets"]["synthetic"]["method_overrides"] = {"mean_teacher": {"ema_decai": 0.5}}
    with pytest.raises(
        ConfigError,
        match=r"datasets\.synthetic\.method_overrides\.mean_teacher: unknown key .ema_decai. \(did you mean .ema_decay",
    ):
        validate_config(cfg, METHODS)


def test_method_seeds_give_one_entry_its_own_seeds_and_must_name_an_entry():
    cfg = validate_config(tiny(seeds=[1, 2], method_seeds={"mean_teacher": [2]}), METHODS)
    runs = {(c.method, c.seed) for c in grid_cells(cfg)}
    assert runs == {("supervised", 1), ("supervised", 2), ("mean_teacher", 2)}
    with pytest.raises(ConfigError, match=r"method_seeds\.ua_mt: not an entry of `methods`"):
        validate_config(tiny(method_seeds={"ua_mt": [1]}), METHODS)


def test_editing_one_variant_changes_only_that_variants_parameters():
    def params(variants: dict) -> dict:
        cfg = validate_config(
            tiny(methods=["mean_teacher", "mean_teacher@a", "mean_teacher@b"], variants={"mean_teacher": variants}),
            METHODS,
        )
        return {c.method: cell_params(cfg, c) for c in grid_cells(cfg)}

    before = params({"a": {"ema_decay": 0.9}, "b": {"ema_decay": 0.5}})
    after = params({"a": {"ema_decay": 0.8}, "b": {"ema_decay": 0.5}})
    assert [m for m in before if before[m] != after[m]] == ["mean_teacher@a"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"methods": ["mean_teacher@nope"]}, "'mean_teacher@nope' names variant 'nope', which variants.mean_teacher"),
        (
            {"variants": {"mean_teacher": {"a": {"ema_decy": 0.9}}}},
            "variants.mean_teacher.a: unknown key 'ema_decy' (did you mean 'ema_decay'?)",
        ),
        ({"variants": {"mean_teachr": {"a": {}}}}, "variants.mean_teachr: unknown method"),
        ({"variants": {"mean_teacher": {"Bad/Name": {}}}}, "variants.mean_teacher.Bad/Name: a variant name must"),
        ({"sweeps": {"mean_teacher": {"ema_dcay": [0.5]}}}, "sweeps.mean_teacher: unknown key 'ema_dcay'"),
        ({"sweeps": {"ua_mt": {"ema_decay": [0.5]}}}, "sweeps.ua_mt: add 'ua_mt' to methods"),
        ({"sweeps": {"mean_teacher": {"ema_decay": ["a/b"]}}}, "sweeps.mean_teacher.ema_decay: values ['a/b']"),
    ],
)
def test_bad_variants_and_sweeps_are_refused_by_name(extra, message):
    cfg = tiny(**extra)
    if "methods" in extra:
        cfg["variants"] = {}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, METHODS)
    assert message in str(err.value)


def test_the_simcvd_ablation_config_plans_every_published_row():
    cfg = validate_config(load_config_file(REPO / "config" / "ablation_simcvd.yaml"), METHODS)
    variants = [m for m in cfg["methods"] if "@" in m]
    assert len(variants) == 16 and "simcvd@head_dropout=0.1" not in variants and "simcvd@head_pool=128" not in variants
    assert {"mean_teacher", "simcvd"} <= set(cfg["methods"]) and len(cfg["methods"]) == 18
    cells = grid_cells(cfg)
    assert len(cells) == 18 * 3 and {c.n_labeled for c in cells} == {8}
    configs = {resolve_run(cell_params(cfg, c)).sha256() for c in cells if c.seed == cfg["seeds"][0]}
    assert len(configs) == 18  # every row is a distinct configuration


def test_a_sweep_point_and_a_user_variant_of_one_name_are_refused_with_both_definitions():
    """A sweep used to replace the user's variant of the same name silently (its lr override was gone)."""
    cfg = tiny(
        methods=["supervised"],
        variants={"supervised": {"has_dropout=false": {"has_dropout": False, "protocol": {"lr": 0.05}}}},
        sweeps={"supervised": {"has_dropout": [False]}},
    )
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, METHODS)
    text = str(err.value)
    assert "sweeps.supervised: its point has_dropout=false" in text and "variants.supervised.has_dropout=false" in text
    assert '"lr": 0.05' in text and "rename the variant" in text


def test_variants_that_change_nothing_or_repeat_another_are_refused():
    copies = tiny(
        methods=["mean_teacher", "mean_teacher@same", "mean_teacher@a", "mean_teacher@b"],
        variants={
            "mean_teacher": {
                "same": {"ema_decay": 0.99, "protocol": {"lr": 0.01}},  # the defaults
                "a": {"ema_decay": 0.9},
                "b": {"ema_decay": 0.9, "noise_std": 0.1},
            }
        },
    )
    with pytest.raises(ConfigError) as err:
        validate_config(copies, METHODS)
    text = str(err.value)
    assert "variants.mean_teacher.same: every value equals the base run's" in text
    assert "variants.mean_teacher.b: the same settings as variants.mean_teacher.a" in text


def test_a_variant_error_names_where_its_value_is_written():
    from harness.workflow.variants import written_at

    cfg = validate_config(tiny(sweeps={"mean_teacher": {"ema_decay": [1.5]}}), METHODS)
    entry = "mean_teacher@ema_decay=1.5"
    assert written_at(cfg, entry) == "sweeps.mean_teacher.ema_decay"
    with pytest.raises(ConfigError, match=r"^sweeps\.mean_teacher\.ema_decay: ema_decay must be in \[0, 1\]; got 1.5"):
        resolve_run(cell_params(cfg, RunId("synthetic", entry, 2, 1)), written_at(cfg, entry))
    named = validate_config(
        tiny(methods=["mean_teacher@x"], variants={"mean_teacher": {"x": {"ema_decay": 2.0}}}), METHODS
    )
    assert written_at(named, "mean_teacher@x") == "variants.mean_teacher.x"
    assert written_at(named, "supervised") == "method_overrides.supervised"
