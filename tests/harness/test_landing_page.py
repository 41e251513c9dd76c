"""The report's landing page fragment (harness.report.landing_page): tables and figure as written by the report rules.

The page in a browser: tests/test_report_browser.py.
"""

from __future__ import annotations

import base64
import re

import matplotlib
import pandas as pd
import pytest

from harness.cli import main
from harness.report.landing_page import LANDING_ID, figure_html, table_body, write_landing
from harness.report.table_model import Entry, Table, render_html, render_html_fragment, write_text_atomic

matplotlib.use("Agg")


def table(name: str, method: str) -> Table:
    return Table(
        name=name,
        title=f"Table ({name})",
        caption="a caption",
        header=("Method", "Dice (%)"),
        rows=((Entry(method), Entry("80.1", "1.2")),),
        groups=(0,),
        data=pd.DataFrame({"dice": [80.1]}),
        footer="Source runs: abc",
    )


def png(path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_fragment_holds_each_table_in_order_and_the_figure(tmp_path):
    tables = [table("la_voxel", "ua_mt"), table("pancreas_voxel", "dtc")]
    pages = [write_text_atomic(tmp_path / f"{t.name}.html", render_html(t)) for t in tables]
    figure = png(tmp_path / "dice_vs_labeled.png")
    out = write_landing(pages, figure, tmp_path / "report" / "landing.html")

    text = out.read_text(encoding="utf-8")
    assert text.startswith(f'<div id="{LANDING_ID}">')
    assert "<style>" not in text and "<body>" not in text and "<title>" not in text  # no page styles leak in
    fragments = [render_html_fragment(t) for t in tables]
    assert text.index(fragments[0]) < text.index(fragments[1])  # the tables as rendered, in the given order
    uri = re.search(r'<img src="data:image/png;base64,([^"]+)"', text)[1]
    assert base64.b64decode(uri) == figure.read_bytes()
    assert text.index(fragments[1]) < text.index("<img")
    assert [p.name for p in out.parent.iterdir()] == ["landing.html"]  # written atomically, nothing left behind


def test_cli_writes_the_fragment(tmp_path):
    page = write_text_atomic(tmp_path / "t.html", render_html(table("synthetic_voxel", "supervised")))
    figure = png(tmp_path / "f.png")
    out = tmp_path / "landing.html"
    assert main(["report-landing", "--tables", str(page), "--figure", str(figure), "--out", str(out)]) == 0
    assert table_body(page) in out.read_text(encoding="utf-8")


def test_bad_inputs_are_refused_by_name(tmp_path):
    not_a_page = tmp_path / "table.md"
    not_a_page.write_text("| a |\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"table\.md: no <body>"):
        table_body(not_a_page)
    not_a_png = tmp_path / "figure.pdf"
    not_a_png.write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match=r"figure\.pdf: not a PNG"):
        figure_html(not_a_png, alt="x")
