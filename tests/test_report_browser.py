"""The HTML report in a real browser: the page people send to co-authors, built from a tiny run and opened in headless
Chromium.

The report is a single-page app whose results are data URIs shown in iframes, so the test injects
tests/report_probe.js into a copy of it: the probe measures the landing page as Chromium laid it out, shows every
result through the report's own eye button and writes what it found into the DOM that `--dump-dom` returns. A
screenshot of the unmodified report must not be blank. Without Chromium the test is skipped, unless CI is set.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_tools import REPO, run_snakemake, snakemake

CONFIG = REPO / ".test" / "config" / "config.yaml"
WINDOW = (1400, 1000)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    """The Chromium executable; skipped where it is missing, unless the environment variable CI is set (then fail)."""
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        if os.environ.get("CI") is None:
            pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it in CI)")
        pytest.fail("CI is set but Chromium is missing: .ci/run installs the Debian package `chromium`")
    return found


def headless(browser: str, page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=30000",
        *flags,
        page.as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"chromium failed ({res.returncode}):\n{res.stderr[-3000:]}"
    return res


def selection_config(path: Path) -> Path:
    """The tiny grid with a validation case, selection on it and the selection audit (docs/protocol.md)."""
    config = yaml.safe_load(CONFIG.read_text())
    config["data"]["synthetic"]["val"] = {"count": 1}
    config["protocol"].update(selection="val", val_every=2)
    config["report"] = {**config.get("report", {}), "selection_audit": {"every": 2}}
    path.write_text(yaml.safe_dump(config))
    return path


def build_report(workdir: Path) -> Path:
    """The tiny grid run (with selection and the audit), then the report as the README builds it (no --cores)."""
    config = selection_config(workdir.parent / "config.yaml")
    run_snakemake(workdir, config)
    out = workdir / "report.html"
    snakemake("--directory", str(workdir), "--configfile", str(config), "--report", str(out))
    return out


def probe(browser: str, report: Path, tmp_path: Path) -> dict:
    """What tests/report_probe.js found in Chromium (see its header)."""
    page = report.read_text(encoding="utf-8")
    script = (Path(__file__).parent / "report_probe.js").read_text(encoding="utf-8")
    end = page.rindex("</body>")
    probed = tmp_path / "probed.html"
    probed.write_text(f"{page[:end]}<script>{script}</script>\n{page[end:]}", encoding="utf-8")
    dom = headless(browser, probed, tmp_path / "profile", "--dump-dom").stdout
    found = re.search(r'<pre id="probe-result">(\{.*?)</pre>', dom, re.S)
    assert found, "the probe did not finish within Chromium's time budget"
    result = json.loads(html.unescape(found[1]))
    assert "error" not in result, result.get("error")
    return result


def page_title(path: Path) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", path.read_text(encoding="utf-8"))[1])


def check_landing(landing: dict, workdir: Path) -> None:
    """The reader lands on the headline table and the Dice-vs-labeled figure; the configuration is folded."""
    assert landing is not None, "the landing page does not show the headline results (#landing-results)"
    assert "System Message" not in landing["text"], landing["text"]  # docutils errors are printed into the page
    assert landing["title"].startswith("Semi-supervised 3D segmentation benchmark: ci")
    assert 0 <= landing["title_box"]["top"] < landing["viewport"]["height"]  # not cut off above the window
    (table,) = landing["tables"]  # one dataset: its voxel table
    assert "Dice (%)" in table["text"] and "supervised (lower bound)" in table["text"]
    assert 0 <= table["box"]["top"] < landing["viewport"]["height"]  # on screen without scrolling
    (figure,) = landing["images"]
    expected = Image.open(workdir / "results" / "ci" / "figures" / "dice_vs_labeled.png").size
    assert (figure["width"], figure["height"]) == expected  # the PNG decoded
    assert figure["box"]["top"] >= table["box"]["bottom"] and figure["box"]["width"] > 0
    assert [d["summary"] for d in landing["details"]] == ["Resolved workflow configuration (schema defaults filled in)"]
    assert not landing["details"][0]["open"]
    assert '"compute"' not in landing["text"]  # the configuration's JSON is folded away
    for category in ("Results", "Figures", "Provenance", "Selection audit"):
        assert category in landing["menu"], landing["menu"]


def check_results(found: dict, workdir: Path) -> None:
    """Every table, figure and the provenance page is shown by the report's eye button and decodes."""
    out = workdir / "results" / "ci"
    pages = sorted([*out.glob("tables/*.html"), out / "report" / "provenance.html"])
    figures = sorted(out.glob("figures/*.png"))
    expected = {str(p.relative_to(workdir)) for p in [*pages, *figures]}
    assert set(found["results"]) == expected
    for page in pages:
        shown = found["results"][str(page.relative_to(workdir))]
        assert shown["element"] == "iframe" and shown["box"]["height"] > 0, (page, shown)
        assert page_title(page) in shown["text"] and shown["tables"] >= 1, (page, shown["text"][:200])
    for figure in figures:
        shown = found["results"][str(figure.relative_to(workdir))]
        assert shown["element"] == "img", (figure, shown)
        assert (shown["width"], shown["height"]) == Image.open(figure).size
        assert shown["box"]["top"] >= 0, (figure, shown)  # a tall figure starts on screen, not above it
    provenance = found["results"]["results/ci/report/provenance.html"]["text"]
    assert "Provenance of every run" in provenance and "run_config.yaml" in provenance
    assert "Labeled subset" in provenance and "Split sha256" in provenance and "val (iteration" in provenance
    audit = found["results"]["results/ci/tables/synthetic_selection_audit.html"]["text"]
    for text in ("Test-set selection audit (synthetic)", "Best on test Dice (%)", "Val-selected Dice (%)"):
        assert text in audit, audit[:300]
    audit_files = {
        "results/ci/tables/synthetic_selection_audit.html",
        "results/ci/figures/selection_audit_synthetic.png",
    }
    assert audit_files <= set(found["results"])
    listed = found["categories"].get("Selection audit", {})
    assert audit_files <= {path for paths in listed.values() for path in paths}
    shown = {
        path for subcategories in found["categories"].values() for paths in subcategories.values() for path in paths
    }
    assert shown == expected  # every result is listed in a sidebar category


@pytest.mark.slow
def test_report_in_chromium(tmp_path):
    browser = chromium()
    workdir = tmp_path / "work"
    report = build_report(workdir)
    found = probe(browser, report, tmp_path)
    check_landing(found["landing"], workdir)
    check_results(found, workdir)

    shot = tmp_path / "landing.png"
    headless(browser, report, tmp_path / "profile", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (WINDOW[1], WINDOW[0])
    assert pixels.std() > 20  # text, a table and a figure, not an empty or loading page
