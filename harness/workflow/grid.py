"""The benchmark grid and the data sources' settings, at DAG build time (no torch import).

`grid_cells` expands a config into training runs, `check_grid` refuses (never shrinks) what cannot run, `cell_params`
cuts out what one run depends on (a Snakemake `params`, so editing one method's settings reruns only that method's
cells), and `data_block` / `source_settings` / `pancreas_split` resolve each dataset's source block and split variant.
"""

from __future__ import annotations

import difflib
import functools
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from harness.config import IMPLEMENTED_SOURCES, PLANNED_SOURCES, SAFE_NAME, ConfigError, DataConfig, RunConfig
from harness.data.splits import LA_N_TRAIN, PANCREAS_DUPLICATES, PANCREAS_N_TRAIN, SPLIT_MCNET, SPLIT_MCNET_MINUS
from harness.run.folder import RunId
from harness.workflow.variants import GRID_NAME, base_of, own_overrides, run_overrides

#: Defaults of the source-specific blocks `data.<dataset>.<source>` (documented in workflow/schemas/config.schema.yaml).
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "released_h5": {
        # yulequan/UA-MT @ 88ed29ad; the folder name's space is URL-encoded where the URL is built (protocol §1.2)
        "base_url": "https://raw.githubusercontent.com/yulequan/UA-MT/88ed29ad794f877122e542a7fa9505a76fa83515/data",
        "retries": 3,
    },
    "raw_nrrd": {"raw_root": None, "crop_seed": 0},
    "tcia": {
        "api_url": "https://services.cancerimagingarchive.net/nbia-api/services/v1",  # NBIA Search API (public)
        "collection": "Pancreas-CT",
        "labels_url": "https://wiki.cancerimagingarchive.net/download/attachments/6261388/"
        "TCIA_pancreas_labels-02-05-2017.zip",
        "labels_sha256": None,
        "dicom_root": None,
        "duplicates": "auto",
        "retries": 3,
    },
    "nifti": {
        "layout": "auto",
        "foreground": [1],
        "modality": "mri",
        "target_spacing": None,
        "test": {"fraction": 0.2, "seed": 0},
        "channel": None,
    },
}
DUPLICATE_POLICIES = ("auto", "require", "drop")
#: Keys of `protocol` that are a run's `SelectionConfig`, not its `ProtocolConfig`.
SELECTION_KEYS = ("selection", "val_every")
#: Keys of a dataset block that source nifti derives from its data (the split, the resampled voxel size).
NIFTI_DERIVED = ("n_train", "spacing_mm")


def source_settings(block: dict[str, Any]) -> dict[str, Any]:
    """The settings block `data.<ds>.<source>` of a dataset, merged over `SOURCE_DEFAULTS` of its source."""
    source = block.get("source", "")
    return {**SOURCE_DEFAULTS.get(source, {}), **(block.get(source) or {})}


def _local_duplicates(dicom_root: str | None) -> bool:
    """Whether a local DICOM folder holds PANCREAS_0025 and PANCREAS_0070 (directly or under `Pancreas-CT/`)."""
    if not dicom_root:
        return False
    roots = (Path(dicom_root), Path(dicom_root) / "Pancreas-CT")
    return all(any((r / f"PANCREAS_{case[-4:]}").is_dir() for r in roots) for case in PANCREAS_DUPLICATES)


def pancreas_split(settings: dict[str, Any]) -> str:
    """Resolve `duplicates` (protocol §2.2) to a split tag when the DAG is built (the grid's n_train depends on it).

    `require` → `mcnet` (data preparation fails if case 0025 or 0070 cannot be obtained); `drop` →
    `mcnet_minus_0025_0070`; `auto` → `mcnet` if `dicom_root` holds both patients' series (today's TCIA download
    lacks them, protocol §2.2, so they can only come from a local copy), else `mcnet_minus_0025_0070`.
    """
    policy = settings.get("duplicates", "auto")
    if policy not in DUPLICATE_POLICIES:
        raise ConfigError(f"data.<dataset>.tcia.duplicates: {policy!r}; use one of {', '.join(DUPLICATE_POLICIES)}")
    if policy == "require" or (policy == "auto" and _local_duplicates(settings.get("dicom_root"))):
        return SPLIT_MCNET
    return SPLIT_MCNET_MINUS


def nifti_split(settings: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(train IDs, test IDs) of a `nifti` dataset from its folder and split settings (files listed, none opened)."""
    return _nifti_split(json.dumps(settings, sort_keys=True, default=str))


@functools.lru_cache(maxsize=16)
def _nifti_split(settings_json: str) -> tuple[list[str], list[str]]:
    from harness.data.nifti_layout import NiftiSettings, find_cases, split_cases

    settings = NiftiSettings.from_block(json.loads(settings_json))
    _, cases = find_cases(settings)
    return split_cases([c.case_id for c in cases], settings)


def data_block(config: dict[str, Any], ds: str) -> dict[str, Any]:
    """`data.<ds>` with its derived keys: the format its source writes; for Pancreas, `split` and the effective
    `n_train` (61 without image0070); for nifti, `n_train` from its split."""
    block = dict(config["data"][ds])
    block.setdefault("format", IMPLEMENTED_SOURCES.get(block.get("source", ""), "la_h5"))
    if block.get("source") == "nifti":
        block["n_train"] = len(nifti_split(source_settings(block))[0])
    if block.get("source") == "tcia":
        block["split"] = pancreas_split(source_settings(block))
        if block["split"] == SPLIT_MCNET_MINUS and block.get("n_train") == PANCREAS_N_TRAIN:
            block["n_train"] = PANCREAS_N_TRAIN - sum(s == "train" for s in PANCREAS_DUPLICATES.values())
    if "val" in block:
        block["val"] = val_split(block, config["datasets"].get(ds, {}).get("labeled", [0]))
    return block


def val_split(block: dict[str, Any], labeled: list[int]) -> dict[str, Any]:
    """`data.<ds>.val` as `harness.config.ValSplit` values: a `fraction` of the training list as a count, a `list`
    file's IDs read now (its content is part of every run's identity), and the first position it may draw from (the
    dataset's largest labeled count)."""
    spec = block["val"]
    if spec.get("list"):
        path = Path(spec["list"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.<dataset>.val.list: {path} does not exist; give a file of case IDs, one per line")
        from harness.data.splits import read_list

        return {"ids": read_list(path), "after": max(labeled), "count": 0, "seed": 0}
    count = spec.get("count") or max(1, round(spec.get("fraction", 0.0) * block["n_train"]))
    return {"count": count, "seed": spec.get("seed", 0), "ids": [], "after": max(labeled)}


def selection_settings(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """`harness.config.SelectionConfig` values of a dataset's runs; the sliding window only when the training job
    evaluates (otherwise a change of `eval.windows_per_batch` would retrain)."""
    protocol, audit = config.get("protocol", {}), config.get("report", {}).get("selection_audit", {})
    mode = protocol.get("selection", "last")
    selection = {
        "mode": mode,
        "val_every": protocol.get("val_every", 0) if mode == "val" else 0,
        "audit_every": audit.get("every", 0),
    }
    if mode == "val" or selection["audit_every"]:
        block = config["data"][dataset]
        selection |= {"stride": block["stride"], "windows_per_batch": config["eval"]["windows_per_batch"]}
    return selection


def n_trainable(config: dict[str, Any], dataset: str) -> int:
    """The training cases of the dataset's runs: the training list without its validation cases."""
    block = data_block(config, dataset)
    val = block.get("val")
    return block["n_train"] - ((len(val["ids"]) or val["count"]) if val else 0)


def source_problems(ds: str, block: dict[str, Any]) -> list[str]:
    """Settings a dataset's source needs (list sizes, the source's format, raw_root, the duplicates policy)."""
    source, problems = block.get("source", ""), []
    fmt = block.get("format", IMPLEMENTED_SOURCES.get(source, "la_h5"))
    if source in IMPLEMENTED_SOURCES and IMPLEMENTED_SOURCES[source] != fmt:
        problems.append(f"data.{ds}.format: source {source!r} writes {IMPLEMENTED_SOURCES[source]!r}, not {fmt!r}")
    expected = {"released_h5": LA_N_TRAIN, "raw_nrrd": LA_N_TRAIN, "tcia": PANCREAS_N_TRAIN}.get(source)
    if expected is not None and block.get("n_train") != expected:
        problems.append(f"data.{ds}.n_train: source {source!r} has {expected} training IDs, not {block.get('n_train')}")
    settings = source_settings(block)
    if source == "raw_nrrd" and not settings["raw_root"]:
        problems.append(f"data.{ds}.raw_nrrd.raw_root: required (the folder holding <ID>/lgemri.nrrd, laendo.nrrd)")
    if source == "tcia":
        if settings.get("duplicates") not in DUPLICATE_POLICIES:
            problems.append(f"data.{ds}.tcia.duplicates: use one of {', '.join(DUPLICATE_POLICIES)}")
        if not settings["api_url"] and not settings["dicom_root"]:
            problems.append(f"data.{ds}.tcia: set api_url (TCIA download) or dicom_root (a local DICOM copy)")
    if source == "nifti":
        problems += _nifti_problems(ds, block, settings)
    return problems


def _nifti_problems(ds: str, block: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """A `nifti` dataset's folder must be readable and its split possible; keys its data decides are refused."""
    problems = [
        f"data.{ds}.{key}: not set for source nifti (it comes from the data: the split gives n_train, "
        f"nifti.target_spacing the voxel size); remove it"
        for key in NIFTI_DERIVED
        if key in block
    ]
    try:
        train, _ = nifti_split(settings)
    except (ValueError, OSError) as err:  # DataError is a ValueError; it names the file and the fix
        return [*problems, f"data.{ds}.nifti: {err}"]
    if len(train) < 2:
        problems.append(f"data.{ds}.nifti: only {len(train)} training case(s) after the split; need at least 2")
    return problems


def method_seeds(config: dict[str, Any], method: str) -> list[int]:
    """The seeds of a grid entry: `method_seeds.<method>` where given, else `seeds`."""
    return config.get("method_seeds", {}).get(method, config["seeds"])


def grid_cells(config: dict[str, Any]) -> list[RunId]:
    """All training runs: datasets × methods × labeled counts × seeds (`method_seeds` per method where given), plus
    `supervised` at n_train (the upper bound, with `seeds`)."""
    cells = []
    for ds, spec in config["datasets"].items():
        for n in spec["labeled"]:
            cells += [RunId(ds, m, n, s) for m in config["methods"] for s in method_seeds(config, m)]
        if spec.get("upper_bound", True):
            cells += [RunId(ds, "supervised", n_trainable(config, ds), s) for s in config["seeds"]]
    return cells


def check_grid(config: dict[str, Any], available_methods: list[str]) -> None:
    """Refuse, naming each, datasets/methods that are unknown or not implemented yet (never shrink the grid)."""
    problems = []
    names = [(name, GRID_NAME) for name in config["methods"]] + [(name, SAFE_NAME) for name in config["datasets"]]
    for name, pattern in names:
        if not pattern.match(name):
            problems.append(f"name {name!r} must match {pattern.pattern} (it becomes a path and reaches a shell)")
    problems += [
        f"method_seeds.{m}: not an entry of `methods` ({', '.join(config['methods'])}); remove it or add the method"
        for m in config.get("method_seeds", {})
        if m not in config["methods"]
    ]
    missing = [m for m in dict.fromkeys(base_of(m) for m in config["methods"]) if m not in available_methods]
    if missing:
        hints = [difflib.get_close_matches(m, available_methods, n=1) for m in missing]
        named = [f"{m} (did you mean {h[0]}?)" if h else m for m, h in zip(missing, hints, strict=True)]
        problems.append(
            f"methods not implemented yet: {', '.join(named)} (available: {', '.join(sorted(available_methods))})"
        )
    for ds, spec in config["datasets"].items():
        if ds not in config["data"]:
            problems.append(f"dataset {ds!r} has no data.{ds} block")
            continue
        source = config["data"][ds].get("source", "")
        if source not in IMPLEMENTED_SOURCES:
            planned = PLANNED_SOURCES.get(source, "no plan")
            problems.append(f"dataset {ds!r}: data source {source!r} is not implemented yet ({planned})")
        found = source_problems(ds, config["data"][ds])
        problems += found
        if source not in IMPLEMENTED_SOURCES or found:
            continue
        try:
            n_train, trainable = data_block(config, ds)["n_train"], n_trainable(config, ds)
        except ConfigError as err:
            problems.append(str(err).replace("<dataset>", ds))
            continue
        bad = [n for n in spec["labeled"] if not 1 <= n < trainable]
        if bad:
            problems.append(
                f"datasets.{ds}.labeled: {bad} must be between 1 and {trainable - 1} (n_train {n_train}"
                f"{f' without {n_train - trainable} validation cases' if trainable < n_train else ''} "
                "minus one)"
            )
        problems += selection_problems(config, ds, trainable)
    if problems:
        raise ConfigError("the configured grid cannot run:\n  - " + "\n  - ".join(problems))


def selection_problems(config: dict[str, Any], ds: str, trainable: int) -> list[str]:
    """`protocol.selection: val` needs a validation split, and a split must fit past the largest labeled count."""
    block = config["data"][ds]
    if config.get("protocol", {}).get("selection", "last") == "val" and "val" not in block:
        return [f"protocol.selection: val needs data.{ds}.val (a validation split: count or fraction, or list)"]
    if "val" not in block:
        return []
    given = [k for k in ("count", "fraction", "list") if k in block["val"]]
    if len(given) != 1:
        return [f"data.{ds}.val: give exactly one of count, fraction or list; got {given or 'none'}"]
    full = data_block(config, ds)
    past = full["n_train"] - max(config["datasets"][ds]["labeled"])
    count = full["val"]["count"] or len(full["val"]["ids"])
    if count > past:
        return [
            f"data.{ds}.val: {count} cases, but only {past} training cases follow the largest labeled count "
            f"({max(config['datasets'][ds]['labeled'])}): take fewer"
        ]
    return []


def cell_params(config: dict[str, Any], cell: RunId) -> dict[str, Any]:
    """The parameters one training run depends on (a Snakemake `params`, so changes rerun only affected cells): a
    variant's run gets `method_overrides.<base>` with the variant's overrides on top (`harness.workflow.variants`)."""
    data = {k: v for k, v in data_block(config, cell.dataset).items() if k in {f.name for f in fields(DataConfig)}}
    data["root"] = f"resources/{cell.dataset}"  # the preparation rules write here (workflow/rules/data.smk)
    overrides = run_overrides(config, cell.method, cell.dataset)
    return {
        "dataset": cell.dataset,
        "method": cell.method,
        "n_labeled": cell.n_labeled,
        "seed": cell.seed,
        "data": data,
        "protocol": {
            k: v
            for k, v in {**config.get("protocol", {}), **overrides.pop("protocol", {})}.items()
            if k not in SELECTION_KEYS
        },
        "method_overrides": overrides,
        "variant_overrides": own_overrides(config, cell.method),
        "threads": config.get("compute", {}).get("train_threads", RunConfig.threads),
        "selection": selection_settings(config, cell.dataset),
    }
