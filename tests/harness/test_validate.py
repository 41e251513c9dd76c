"""harness.workflow.validate: the one config validator of the Snakefile and of `python -m harness check-config`."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_tools import snakemake

from harness.config import ConfigError
from harness.run.method_table import read_methods
from harness.workflow.validate import SCHEMA_PATH, dotted, load_config_file, validate_config

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHIPPED = ["config/smoke.yaml", "config/config.yaml", ".test/config/config.yaml"]
#: Method names as the Snakefile sees them (file stems of methods/*.py), without importing torch.
METHODS = read_methods(REPO)


def smoke() -> dict:
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def problems(config: dict) -> list[str]:
    """The problem lines of validate_config's refusal (fails the test if the config is accepted)."""
    with pytest.raises(ConfigError) as err:
        validate_config(config, METHODS)
    header, *lines = str(err.value).splitlines()
    assert header.startswith("the configuration has ")
    assert all(line.startswith("  - ") for line in lines)
    return [line.removeprefix("  - ") for line in lines]


def bad_smoke(tmp_path: Path, edit) -> Path:
    """config/smoke.yaml with `edit(config)` applied, written to tmp_path/bad.yaml."""
    config = smoke()
    edit(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def check_config(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "harness", "check-config", str(path)]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def snakemake_dry_run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake("-n", *args, cwd=cwd, check=False)


def problem_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("  - ")]


# -- the schema ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_validate(name):
    config = load_config_file(REPO / name)
    assert validate_config(config, METHODS) is config


def test_stride_zero_is_refused_with_path_and_fix():
    config = smoke()
    config["data"]["synthetic"]["stride"] = [0, 16, 8]
    (line,) = problems(config)
    assert line.startswith("data.synthetic.stride[0]: 0 is less than the minimum of 1; use a value >= 1")
    assert "Sliding-window stride" in line  # the schema's description of `stride`, as a hint


def test_duplicate_seeds_are_refused():
    config = smoke()
    config["seeds"] = [1, 2, 1]
    (line,) = problems(config)
    assert line.startswith("seeds: [1, 2, 1] has non-unique elements; remove the repeated 1")


def test_misspelt_key_gets_did_you_mean_and_a_short_allowed_list():
    config = smoke()
    config["data"]["synthetic"]["pach_size"] = config["data"]["synthetic"].pop("patch_size")
    lines = problems(config)
    assert "data.synthetic: unknown key 'pach_size' (did you mean 'patch_size'?); allowed keys: augment, " in lines[1]
    assert lines[0].startswith("data.synthetic: 'patch_size' is a required property; add it")
    assert len(lines) == 2


def test_top_level_iterations_points_to_protocol():
    config = smoke()
    config["iterations"] = 5
    (line,) = problems(config)
    assert line.startswith("top level: unknown key 'iterations' (did you mean protocol.iterations?); allowed keys: ")


def test_unknown_key_message_is_short_without_schema_dump():
    config = smoke()
    config["data"]["synthetic"]["synthetic"]["sead"] = 1
    with pytest.raises(ConfigError) as err:
        validate_config(config, METHODS)
    message = str(err.value)
    assert len(message.splitlines()) < 5 and len(message) < 400
    assert "$schema" not in message and "'n_train': 16" not in message  # neither the schema nor the instance
    assert "data.synthetic.synthetic: unknown key 'sead' (did you mean 'seed'?); allowed keys: n_test, seed" in message


def test_several_problems_are_reported_together_sorted_by_path():
    config = smoke()
    config["seeds"] = [1, 1]
    config["data"]["synthetic"]["stride"] = [16, 0, 8]
    config["eval"]["empty_pred"] = "zero"
    config["name"] = "Smoke Run"
    with pytest.raises(ConfigError) as err:
        validate_config(config, METHODS)
    header, *lines = str(err.value).splitlines()
    assert header == "the configuration has 4 problems:"
    paths = [line.removeprefix("  - ").split(":")[0] for line in lines]
    assert paths == ["data.synthetic.stride[1]", "eval.empty_pred", "name", "seeds"]


def test_long_values_are_shortened():
    config = smoke()
    config["data"]["synthetic"]["spacing_mm"] = "x" * 500
    (line,) = problems(config)
    assert line.startswith("data.synthetic.spacing_mm: 'xxx") and "...' is not" not in line
    assert "x" * 100 not in line and "is not of type 'array'; write a list" in line


def test_grid_problems_come_after_the_schema():
    config = smoke()
    config["methods"] = ["supervised", "not_a_method"]
    with pytest.raises(ConfigError, match="methods not implemented yet: not_a_method"):
        validate_config(config, METHODS)


def test_defaults_are_filled_in_nested_objects():
    config = smoke()
    for key in ("compute", "report"):
        config.pop(key, None)
    config["eval"] = {}
    config["data"]["copy"] = copy.deepcopy(config["data"]["synthetic"])
    del config["data"]["synthetic"]["synthetic"], config["data"]["copy"]["synthetic"], config["data"]["copy"]["augment"]
    validate_config(config, METHODS)
    assert config["eval"] == {"empty_pred": "worst_case", "windows_per_batch": 4}
    assert config["compute"]["train_threads"] == 2 and config["report"]["reference_method"] == "simcvd"
    assert config["data"]["copy"]["augment"] == "rotflip_crop"  # an entry under additionalProperties
    assert config["data"]["synthetic"]["synthetic"] == {"seed": 0, "n_test": 4}
    config["data"]["copy"]["synthetic"]["seed"] = 9  # each default is a copy of its own
    assert config["data"]["synthetic"]["synthetic"]["seed"] == 0


@pytest.mark.parametrize("name", SHIPPED)
def test_defaults_are_snakemakes(name):
    from snakemake.utils import validate

    ours = load_config_file(REPO / name)
    theirs = copy.deepcopy(ours)
    validate_config(ours, METHODS)
    validate(theirs, str(SCHEMA_PATH), set_default=True)
    assert ours == theirs


def test_dotted_paths():
    assert dotted([]) == "top level"
    assert dotted(["data", "synthetic", "stride", 0]) == "data.synthetic.stride[0]"


# -- the file --------------------------------------------------------------------------------------------------------


def test_empty_file_is_refused_by_name(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"empty.yaml is empty; start from config/smoke.yaml"):
        load_config_file(tmp_path / "empty.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nseeds: [1, 2]\nmethods: [supervised\ndatasets: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}, line 4, column 9: invalid YAML: ")
    assert "starts on line 3" in message  # the unclosed bracket


def test_non_mapping_file_is_refused(tmp_path):
    (tmp_path / "list.yaml").write_text("- name: x\n")
    with pytest.raises(ConfigError, match=r"list.yaml: the top level must be a mapping .* not a list"):
        load_config_file(tmp_path / "list.yaml")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config file .*nope.yaml does not exist"):
        load_config_file(tmp_path / "nope.yaml")


# -- the two entry points: one validator -----------------------------------------------------------------------------


def break_stride(config: dict) -> None:
    config["data"]["synthetic"]["stride"] = [0, 16, 8]


def duplicate_seed(config: dict) -> None:
    config["seeds"] = [1, 1]


def misspell_patch_size(config: dict) -> None:
    config["data"]["synthetic"]["pach_size"] = config["data"]["synthetic"].pop("patch_size")


def add_top_level_iterations(config: dict) -> None:
    config["iterations"] = 5


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (break_stride, "data.synthetic.stride[0]: 0 is less than the minimum of 1"),
        (duplicate_seed, "seeds: [1, 1] has non-unique elements"),
        (misspell_patch_size, "data.synthetic: unknown key 'pach_size' (did you mean 'patch_size'?)"),
        (add_top_level_iterations, "top level: unknown key 'iterations'"),
    ],
)
def test_check_config_refuses_what_the_schema_refuses(tmp_path, edit, expected):
    res = check_config(bad_smoke(tmp_path, edit), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"  - {expected}" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty.yaml is empty; start from config/smoke.yaml"), ("a: [1\n", "empty.yaml, line 2, column 1")],
)
def test_check_config_reports_unreadable_files_without_traceback(tmp_path, text, expected):
    (tmp_path / "empty.yaml").write_text(text)
    res = check_config(tmp_path / "empty.yaml", cwd=tmp_path)
    assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr


def test_check_config_and_snakemake_print_the_same_problem_lines(tmp_path):
    def edit(config: dict) -> None:
        misspell_patch_size(config)
        break_stride(config)
        config["top_level_typo"] = 1

    bad = bad_smoke(tmp_path, edit)
    cli = check_config(bad, cwd=tmp_path)
    smk = snakemake_dry_run(tmp_path, "--configfile", str(bad))
    assert cli.returncode == 2 and smk.returncode != 0
    assert "config refused: the configuration has 4 problems:" in smk.stdout + smk.stderr
    expected = problem_lines(cli.stderr)
    assert len(expected) == 4 and expected[0].startswith("- top level: unknown key 'top_level_typo'")
    assert expected[3].startswith("- data.synthetic.stride[0]: 0 is less than the minimum of 1")
    assert problem_lines(smk.stdout + smk.stderr) == expected


def test_snakemake_names_the_line_of_a_broken_default_config(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("name: paper\nseeds: [1\nmethods: [supervised]\n")
    res = snakemake_dry_run(tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config refused: config/config.yaml, line 3, column 8: invalid YAML: " in out


def schema_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every key path of the schema, `<ds>` standing for a dataset key and `<method>` for a method key (the entries
    under additionalProperties)."""
    keys = []
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        keys += [path, *schema_keys(sub, path)]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        placeholder = "<method>" if prefix in ("sweeps", "variants", "method_overrides") else "<ds>"
        keys += schema_keys(extra, f"{prefix}.{placeholder}")
    return keys


def test_config_readme_lists_every_key():
    readme = (REPO / "config" / "README.md").read_text()
    keys = schema_keys(yaml.safe_load(SCHEMA_PATH.read_text()))
    assert len(keys) > 60 and "report.reference_method" in keys
    assert [k for k in keys if f"| `{k}` |" not in readme] == []


def test_confusing_inputs_get_one_line_naming_key_and_fix():
    """--config list items as text, a misspelt reference method, keys moved out of `protocol`, labeled_bs equal to
    batch_size: each a line naming the key as written and the fix."""
    from harness.method.build import resolve_run
    from harness.run.folder import RunId
    from harness.workflow.grid import cell_params

    config = smoke()
    config["seeds"] = ["1", "2"]  # what `--config 'seeds=[1,2]'` hands over (YAML's BaseLoader: text)
    assert validate_config(config, METHODS)["seeds"] == [1, 2]
    typo = smoke()
    typo["report"] = {"reference_method": "simcvdd"}
    with pytest.raises(
        ConfigError, match=r"report.reference_method: 'simcvdd' is no method \(did you mean 'simcvd'\?\)"
    ):
        validate_config(typo, METHODS)
    moved = smoke()
    moved["protocol"]["log_every"] = 5
    with pytest.raises(ConfigError, match=r"protocol.log_every: moved to compute.log_every .*`compute.log_every: 5`"):
        validate_config(moved, METHODS)
    same = validate_config({**smoke(), "protocol": {"labeled_bs": 4, "batch_size": 4}}, METHODS)
    with pytest.raises(
        ConfigError, match=r"protocol.labeled_bs \(4\) equals protocol.batch_size \(4\), so mean_teacher"
    ):
        resolve_run(cell_params(same, RunId("synthetic", "mean_teacher", 2, 1337)))


def test_check_config_names_an_out_of_range_method_value_where_it_is_written(tmp_path):
    path = bad_smoke(tmp_path, lambda c: c.update(sweeps={"mean_teacher": {"ema_decay": [1.5]}}))
    res = check_config(path, REPO)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "sweeps.mean_teacher.ema_decay: ema_decay must be in [0, 1]; got 1.5" in res.stderr
