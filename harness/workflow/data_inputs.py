"""Input and parameter functions of the data rules (workflow/rules/data.smk) for a validated config: the settings of
each dataset's source, the files its preparation reads (so that an edited source file, or a list of test cases, reruns
what was prepared from it) and the case files its manifest needs. No torch import."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.workflow.grid import (
    PANCREAS_DUPLICATES,
    SPLIT_MCNET_MINUS,
    data_block,
    nifti_split,
    source_settings,
)

#: The project's case manifests (LA, Pancreas): case IDs and split positions.
MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
Wildcards = Any


class DataInputs:
    """The data rules' input functions (`wildcards` → value) for `config`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def datasets_of(self, source: str) -> list[str]:
        """The datasets whose data comes from `source`."""
        return [ds for ds, spec in self.config["data"].items() if spec.get("source") == source]

    def root(self, wildcards: Wildcards) -> str:
        return f"resources/{wildcards.dataset}"

    def raw_dir(self, wildcards: Wildcards) -> str:
        return f"resources/{wildcards.dataset}/raw"

    def manifest(self, wildcards: Wildcards) -> str:
        return f"resources/{wildcards.dataset}/manifest.json"

    def value(self, key: str) -> Callable[[Wildcards], Any]:
        """`data.<dataset>.<key>`."""
        return lambda wildcards: self.config["data"][wildcards.dataset][key]

    def words(self, key: str) -> Callable[[Wildcards], str]:
        """`data.<dataset>.<key>`, a list, as words for a shell command."""
        return lambda wildcards: " ".join(str(v) for v in self.config["data"][wildcards.dataset][key])

    def synthetic(self, key: str) -> Callable[[Wildcards], Any]:
        return lambda wildcards: self.config["data"][wildcards.dataset]["synthetic"][key]

    def source(self, key: str) -> Callable[[Wildcards], Any]:
        """A setting of the dataset's source block `data.<ds>.<source>` (defaults: `grid.SOURCE_DEFAULTS`)."""

        def get(wildcards: Wildcards) -> Any:
            value = source_settings(self.config["data"][wildcards.dataset]).get(key)
            return "" if value is None else value

        return get

    def eval_spacing(self, wildcards: Wildcards) -> str:
        """Voxel size of the mm metrics and NIfTI headers: `data.<ds>.spacing_mm`, or `data` for a source whose
        prepared data records it (nifti: the target spacing, read from manifest.json by the job)."""
        block = self.config["data"][wildcards.dataset]
        return "data" if block.get("source") == "nifti" else " ".join(str(v) for v in block["spacing_mm"])

    # -- LA --------------------------------------------------------------------------------------------------------
    def la_case_files(self, wildcards: Wildcards) -> list[str]:
        """Every LA case file: the LA manifest rule needs all 100 (a subset is fetched by naming its files)."""
        ids = manifest_ids("la_manifest.csv")
        root = self.root(wildcards)
        files = [f"{root}/2018LA_Seg_Training Set/{i}/mri_norm2.h5" for i in ids]
        if self.config["data"][wildcards.dataset].get("source") == "raw_nrrd":
            files += [f"{root}/raw_margins/{i}.json" for i in ids]
        return files

    def la_raw_file(self, name: str) -> Callable[[Wildcards], str]:
        def get(wildcards: Wildcards) -> str:
            raw_root = source_settings(self.config["data"][wildcards.dataset])["raw_root"]
            return str(Path(raw_root, wildcards.case, name))

        return get

    # -- Pancreas --------------------------------------------------------------------------------------------------
    def pancreas_split(self, wildcards: Wildcards) -> str:
        """The split tag resolved from `tcia.duplicates` when the DAG is built (`grid.pancreas_split`)."""
        return data_block(self.config, wildcards.dataset)["split"]

    def pancreas_case_files(self, wildcards: Wildcards) -> list[str]:
        """The h5 and QA files of every case of the dataset's split variant (80 or 82)."""
        drop = PANCREAS_DUPLICATES if self.pancreas_split(wildcards) == SPLIT_MCNET_MINUS else ()
        ids = manifest_ids("pancreas_split.csv", drop)
        root = self.root(wildcards)
        return [f"{root}/h5/{i}_norm.h5" for i in ids] + [f"{root}/qa/{i}.json" for i in ids]

    # -- your own dataset (nifti) ----------------------------------------------------------------------------------
    def nifti_settings(self, wildcards: Wildcards) -> str:
        """The `data.<ds>.nifti` block with its defaults, as JSON (a rerun trigger of the plan job)."""
        return json.dumps(source_settings(self.config["data"][wildcards.dataset]), sort_keys=True)

    def nifti_sources(self, wildcards: Wildcards) -> list[str]:
        """Every file the plan job reads: dataset.json, each case's image and label, and the list of test cases
        when `test: {list: <file>}` names one (an edit of any of them reruns the preparation)."""
        from harness.data.nifti_layout import NiftiSettings, find_cases

        block = source_settings(self.config["data"][wildcards.dataset])
        settings = NiftiSettings.from_block(block)
        _, cases = find_cases(settings)
        test_list = [str(settings.test_list)] if settings.test_list else []
        return [str(settings.root / "dataset.json"), *test_list] + [str(p) for c in cases for p in (c.image, c.label)]

    def nifti_case_sources(self, wildcards: Wildcards) -> list[str]:
        """The source image and label files of one case."""
        from harness.data.nifti_layout import NiftiSettings, find_cases

        settings = NiftiSettings.from_block(source_settings(self.config["data"][wildcards.dataset]))
        _, cases = find_cases(settings)
        return [str(p) for c in cases if c.case_id == wildcards.case for p in (c.image, c.label)]

    def nifti_case_files(self, wildcards: Wildcards) -> list[str]:
        """The h5 and QA files of every case of a nifti dataset (train and test, from its split)."""
        train, test = nifti_split(source_settings(self.config["data"][wildcards.dataset]))
        root = self.root(wildcards)
        return [f"{root}/cases/{c}.h5" for c in train + test] + [f"{root}/qa/{c}.json" for c in train + test]


def manifest_ids(csv_name: str, drop: tuple | dict = ()) -> list[str]:
    """Case IDs of a project manifest CSV (harness/data/manifests/), train then test, in list order."""
    with open(MANIFESTS / csv_name, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["id"] not in drop]
    order = {"train": 0, "test": 1}
    return [r["id"] for r in sorted(rows, key=lambda r: (order[r["split"]], int(r["index"])))]
