"""`python -m harness <data command>`: downloading and preparing datasets (workflow/rules/data.smk).

The command line is built for every job of the workflow, so nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_make_synthetic(a: argparse.Namespace) -> None:
    from harness.data.synthetic import write_synthetic_la

    write_synthetic_la(a.out, n_train=a.n_train, n_test=a.n_test, seed=a.seed)  # writes <out>/manifest.json last


def cmd_fetch_la(a: argparse.Namespace) -> None:
    from harness.data import la
    from harness.data.download import DataError

    if not a.case and not a.lists:
        raise DataError("fetch-la: give --case ID ... and/or --lists")
    for case_id in a.case:
        la.fetch_case(a.root, case_id, a.base_url, retries=a.retries, progress=not a.no_progress)
    if a.lists:
        la.fetch_lists(a.root, a.base_url, retries=a.retries)


def cmd_la_raw(a: argparse.Namespace) -> None:
    from harness.data import la

    case = la.manifest_case(la.read_manifest(), a.case)
    la.preprocess_raw_case(Path(a.raw_root) / a.case, a.root, a.case, seed=a.seed, expected_fg=case.fg_voxels)


def cmd_la_lists(a: argparse.Namespace) -> None:
    from harness.data import la

    la.write_lists_from_manifest(a.root)


def cmd_la_manifest(a: argparse.Namespace) -> None:
    from harness.data import la

    la.write_manifest(a.root, source=a.source, crop_seed=a.crop_seed)


def cmd_tcia_series(a: argparse.Namespace) -> None:
    from harness.data import tcia

    tcia.build_series_index(
        a.out, api_url=a.api_url or None, collection=a.collection, dicom_root=a.dicom_root or None, retries=a.retries
    )


def cmd_tcia_fetch(a: argparse.Namespace) -> None:
    from harness.data import tcia

    tcia.fetch_series(a.index, a.case, a.out, api_url=a.api_url, retries=a.retries, progress=not a.no_progress)


def cmd_pancreas_labels(a: argparse.Namespace) -> None:
    from harness.data import tcia

    tcia.fetch_labels(a.url, a.raw_dir, sha256=a.sha256 or None, retries=a.retries, progress=not a.no_progress)


def cmd_pancreas_case(a: argparse.Namespace) -> None:
    import SimpleITK as sitk

    from harness.data import pancreas

    if a.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    pancreas.prepare_case(a.case, a.dicom, a.labels, a.root)


def cmd_pancreas_manifest(a: argparse.Namespace) -> None:
    from harness.data import pancreas

    pancreas.write_manifest(a.root, split=a.split, policy=a.policy)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Data preparation subcommands (workflow/rules/data.smk)."""
    p = sub.add_parser("make-synthetic", help="write the synthetic LA-like dataset in the released LA layout")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--n-train", type=int, required=True)
    p.add_argument("--n-test", type=int, required=True)
    p.set_defaults(func=cmd_make_synthetic)
    _source_parsers(sub)
    _nifti_parsers(sub)


def _download_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--retries", type=int, default=3, help="attempts per file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _source_parsers(sub: argparse._SubParsersAction) -> None:
    """The LA and Pancreas sources' subcommands."""
    p = sub.add_parser("fetch-la", help="download + verify released LA cases and/or the lists (protocol §1.2)")
    p.add_argument("--root", required=True)
    p.add_argument("--base-url", required=True, help="URL or local folder holding train.list and 2018LA_Seg_...")
    p.add_argument("--case", nargs="*", default=[], help="LA case IDs")
    p.add_argument("--lists", action="store_true", help="also fetch train.list and test.list")
    _download_flags(p)
    p.set_defaults(func=cmd_fetch_la)

    p = sub.add_parser("la-raw", help="preprocess one raw LA case (lgemri/laendo.nrrd), seeded margins (§1.5)")
    p.add_argument("--root", required=True)
    p.add_argument("--raw-root", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.set_defaults(func=cmd_la_raw)

    p = sub.add_parser("la-lists", help="write the LA lists from the project manifest (raw_nrrd source)")
    p.add_argument("--root", required=True)
    p.set_defaults(func=cmd_la_lists)

    p = sub.add_parser("la-manifest", help="verify a complete LA root and write manifest.json")
    p.add_argument("--root", required=True)
    p.add_argument("--source", choices=["released_h5", "raw_nrrd"], required=True)
    p.add_argument("--crop-seed", type=lambda v: int(v) if v else None, default=None, help="raw_nrrd margin seed")
    p.set_defaults(func=cmd_la_manifest)

    p = sub.add_parser("tcia-series", help="index the Pancreas-CT CT series (TCIA getSeries and/or a local copy)")
    p.add_argument("--out", required=True)
    p.add_argument("--api-url", default="", help="NBIA API base URL ('' = local copy only)")
    p.add_argument("--collection", required=True)
    p.add_argument("--dicom-root", default="", help="local DICOM folder holding PANCREAS_<nnnn>/ ('' = none)")
    p.add_argument("--retries", type=int, default=3)
    p.set_defaults(func=cmd_tcia_series)

    p = sub.add_parser("tcia-fetch", help="one case's DICOM series into a folder (TCIA getImage or local links)")
    p.add_argument("--index", required=True)
    p.add_argument("--case", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--api-url", default="")
    _download_flags(p)
    p.set_defaults(func=cmd_tcia_fetch)

    p = sub.add_parser("pancreas-labels", help="fetch (or use the hand-placed) label archive and extract it")
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--sha256", default="")
    _download_flags(p)
    p.set_defaults(func=cmd_pancreas_labels)

    p = sub.add_parser("pancreas-case", help="MC-Net preprocessing of one Pancreas case (protocol §2.3)")
    p.add_argument("--case", required=True)
    p.add_argument("--dicom", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--threads", type=int, default=None, help="SimpleITK threads (default: all cores)")
    p.set_defaults(func=cmd_pancreas_case)

    p = sub.add_parser("pancreas-manifest", help="check all Pancreas cases, write the lists and manifest.json")
    p.add_argument("--root", required=True)
    p.add_argument("--split", choices=["mcnet", "mcnet_minus_0025_0070"], required=True)
    p.add_argument("--policy", choices=["auto", "require", "drop"], required=True)
    p.set_defaults(func=cmd_pancreas_manifest)


def cmd_nifti_plan(a: argparse.Namespace) -> None:
    from harness.config import ConfigError
    from harness.data import nifti

    try:
        block = json.loads(a.settings)
    except json.JSONDecodeError as err:
        raise ConfigError(f"nifti-plan --settings: not JSON ({err}): {a.settings!r}") from err
    nifti.plan_dataset(nifti.NiftiSettings.from_block(block), Path(a.out))


def cmd_nifti_case(a: argparse.Namespace) -> None:
    import SimpleITK as sitk

    from harness.data import nifti

    if a.threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(a.threads)
    nifti.prepare_case(a.case, nifti.read_plan(Path(a.out)), Path(a.out))


def cmd_nifti_manifest(a: argparse.Namespace) -> None:
    from harness.data import nifti

    nifti.write_manifest(Path(a.out))


def _nifti_parsers(sub: argparse._SubParsersAction) -> None:
    """Subcommands of the `nifti` source: an MSD or nnU-Net v2 raw dataset (harness/data/nifti.py)."""
    p = sub.add_parser("nifti-plan", help="find the cases, fix the split, spacing and normalisation: ROOT/plan.json")
    p.add_argument("--settings", required=True, help="the data.<dataset>.nifti block as JSON")
    p.add_argument("--out", required=True, help="the prepared dataset's folder (ROOT)")
    p.set_defaults(func=cmd_nifti_plan)

    p = sub.add_parser("nifti-case", help="prepare one case of ROOT/plan.json: cases/<ID>.h5, qa/<ID>.{png,json}")
    p.add_argument("--out", required=True, help="the prepared dataset's folder (ROOT, holds plan.json)")
    p.add_argument("--case", required=True)
    p.add_argument("--threads", type=int, default=None, help="SimpleITK threads (default: all cores)")
    p.set_defaults(func=cmd_nifti_case)

    p = sub.add_parser("nifti-manifest", help="check every case of ROOT/plan.json, write the lists and manifest.json")
    p.add_argument("--out", required=True, help="the prepared dataset's folder (ROOT)")
    p.set_defaults(func=cmd_nifti_manifest)
