"""Config: strict dataclass loading, grid construction, refusal of unimplemented parts, per-cell params."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError, DataConfig, ProtocolConfig, from_dict, load_run_config
from harness.io import write_yaml_atomic
from harness.method import main_stage
from harness.method.build import resolve_run
from harness.run.folder import RunId
from harness.workflow.grid import cell_params, check_grid, grid_cells

REPO = Path(__file__).resolve().parents[2]


def smoke() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError, match=r"protocol: unknown key 'iteratons'. Did you mean 'iterations'\?"):
        from_dict(ProtocolConfig, {"iteratons": 10}, "protocol")


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"protocol.lr: expected a number, got 'fast'"):
        from_dict(ProtocolConfig, {"lr": "fast"}, "protocol")
    with pytest.raises(ConfigError, match=r"protocol.iterations: expected an integer"):
        from_dict(ProtocolConfig, {"iterations": 1.5}, "protocol")
    with pytest.raises(ConfigError, match=r"expected true/false"):
        from_dict(ProtocolConfig, {"deterministic": 1}, "protocol")


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"labeled_bs \(5\) must be <= protocol.batch_size \(4\)"):
        ProtocolConfig(labeled_bs=5)
    with pytest.raises(ConfigError, match="multiples of 16"):
        DataConfig(root="x", patch_size=(112, 112, 88))
    with pytest.raises(ConfigError, match="augment"):
        DataConfig(root="x", augment="elastic")


def test_lr_schedule_matches_ua_mt_steps():
    p = main_stage(ProtocolConfig(), needs_unlabeled=True)
    # 1-based iterations 1..2500 use 0.01, 2501..5000 use 1e-3, 5001..6000 use 1e-4 (protocol §3.3)
    assert p.lr_at(0) == pytest.approx(0.01) and p.lr_at(2499) == pytest.approx(0.01)
    assert p.lr_at(2500) == pytest.approx(1e-3) and p.lr_at(4999) == pytest.approx(1e-3)
    assert p.lr_at(5000) == pytest.approx(1e-4) and p.lr_at(5999) == pytest.approx(1e-4)


def test_grid_adds_upper_bound_for_supervised_only():
    cfg = smoke()
    cfg["methods"], cfg["seeds"] = ["supervised"], [1337, 1338]
    cells = grid_cells(cfg)
    assert len(cells) == 2 * 2 + 2  # 2 labeled counts x 2 seeds + upper bound x 2 seeds
    assert RunId("synthetic", "supervised", 16, 1337) in cells
    cfg["methods"] = ["supervised", "other"]
    assert sum(c.n_labeled == 16 for c in grid_cells(cfg)) == 2


def test_paper_config_is_refused_naming_every_missing_part():
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        check_grid(paper, ["supervised"])
    msg = str(err.value)
    for name in ("mean_teacher", "ua_mt", "dtc", "cvrl", "sup_local_contrast", "simcvd"):
        assert name in msg
    assert "dataset 'la'" not in msg and "dataset 'pancreas'" not in msg  # both data sources are implemented
    paper["data"]["la"]["source"] = "carrier_pigeon"
    with pytest.raises(ConfigError, match="dataset 'la': data source 'carrier_pigeon' is not implemented"):
        check_grid(paper, ["supervised", "mean_teacher", "ua_mt", "dtc", "cvrl", "sup_local_contrast", "simcvd"])


def test_check_grid_rejects_bad_counts_and_names():
    cfg = smoke()
    cfg["datasets"]["synthetic"]["labeled"] = [16]
    with pytest.raises(ConfigError, match=r"between 1 and 15 \(n_train 16 minus one\)"):
        check_grid(cfg, ["supervised"])
    cfg = smoke()
    cfg["methods"] = ["Bad;rm"]
    with pytest.raises(ConfigError, match="must match"):
        check_grid(cfg, ["supervised"])


def test_cell_params_only_hold_what_the_cell_depends_on():
    cfg = smoke()
    del cfg["report"]["selection_audit"]  # no evaluation during training: the window is evaluation's alone
    cfg["method_overrides"] = {"supervised": {"has_dropout": False}, "other": {"x": 1}}
    params = cell_params(cfg, RunId("synthetic", "supervised", 2, 1337))
    assert params["method_overrides"] == {"has_dropout": False}
    assert "stride" not in params["data"] and "spacing_mm" not in params["data"]  # eval-only keys
    assert params["data"]["root"] == "resources/synthetic"
    changed = copy.deepcopy(cfg)
    changed["method_overrides"]["other"] = {"x": 2}
    changed["eval"] = {"empty_pred": "nan"}
    changed["data"]["synthetic"]["stride"] = [8, 8, 8]
    assert cell_params(changed, RunId("synthetic", "supervised", 2, 1337)) == params
    # with the selection audit the training job evaluates: its window is part of the run
    audited = smoke()
    assert cell_params(audited, RunId("synthetic", "supervised", 2, 1337))["selection"]["stride"] == [16, 16, 8]


def test_resolve_run_validates_method_overrides(tmp_path):
    cfg = smoke()
    cfg["method_overrides"] = {"supervised": {"has_dropuot": False}}
    with pytest.raises(ConfigError, match=r"method_overrides.supervised: unknown key 'has_dropuot'"):
        resolve_run(cell_params(cfg, RunId("synthetic", "supervised", 2, 1337)))


def test_resolved_run_round_trips_and_supervised_uses_full_labeled_batch(tmp_path):
    run = resolve_run(cell_params(smoke(), RunId("synthetic", "supervised", 4, 1337)))
    assert run.protocol.labeled_bs == run.protocol.batch_size == 4
    assert run.protocol.iterations == smoke()["protocol"]["iterations"] and run.protocol.n_filters == 8
    write_yaml_atomic(tmp_path / "run_config.yaml", run.to_dict())
    again = load_run_config(tmp_path / "run_config.yaml")
    assert again == run and again.sha256() == run.sha256()
    assert resolve_run(cell_params(smoke(), RunId("synthetic", "supervised", 4, 1338))).sha256() != run.sha256()


def test_n_labeled_out_of_range():
    with pytest.raises(ConfigError, match="n_labeled=17"):
        resolve_run(cell_params(smoke(), RunId("synthetic", "supervised", 17, 1)))


def test_smoke_cases_need_several_sliding_windows():
    from harness.data.synthetic import write_synthetic_la
    from harness.evaluate.inference import count_windows

    cfg = smoke()["data"]["synthetic"]
    import inspect

    defaults = inspect.signature(write_synthetic_la).parameters
    (x_lo, _), (y_lo, _) = defaults["shape_xy"].default
    smallest = (x_lo, y_lo, defaults["shape_z"].default)
    assert count_windows(smallest, cfg["patch_size"], cfg["stride"]) >= 8
