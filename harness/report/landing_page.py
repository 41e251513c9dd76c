"""The HTML report's landing page: the headline results tables and the Dice-vs-labeled figure as one HTML fragment.

`snakemake --report` opens on the workflow description (`workflow/report/workflow.rst`), which includes this fragment
with `.. raw:: html` / `:file:`. A figure on that page must be a data URI (the report is one self-contained file) and
docutils refuses lines over 10,000 characters in the .rst itself, hence a file written by a rule (`landing`,
workflow/rules/report.smk) rather than text built in the template. Subcommand: `python -m harness report-landing`.
"""

from __future__ import annotations

import argparse
import base64
import html
import os
from collections.abc import Iterable
from pathlib import Path

#: The id of the fragment's outer element (the report's stylesheet rules in workflow.rst and the browser test use it).
LANDING_ID = "landing-results"


def table_body(page: str | os.PathLike) -> str:
    """The <body> content of a table page written by `harness.report.table_model.html_page` (title, caption, table)."""
    text = Path(page).read_text(encoding="utf-8")
    start, end = text.find("<body>"), text.rfind("</body>")
    if start < 0 or end < start:
        raise ValueError(f"{page}: no <body>...</body>; expected a table page of `harness report-tables`")
    return text[start + len("<body>") : end].strip()


def figure_html(png: str | os.PathLike, alt: str) -> str:
    """An <img> holding the PNG as a data URI, scaled to the page width."""
    data = Path(png).read_bytes()
    if not data.startswith(b"\x89PNG"):
        raise ValueError(f"{png}: not a PNG file; expected a figure of `harness report-figures`")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{uri}" alt="{html.escape(alt)}" style="width:100%;max-width:60rem">'


def landing_fragment(tables: Iterable[str | os.PathLike], figure: str | os.PathLike) -> str:
    """The landing page's results: each table (in the given order), then the figure."""
    parts = [table_body(t) for t in tables]
    parts.append(figure_html(figure, alt="Test Dice vs labeled count per method"))
    return f'<div id="{LANDING_ID}">\n' + "\n".join(parts) + "\n</div>\n"


def write_landing(tables: Iterable[str | os.PathLike], figure: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write `landing_fragment(tables, figure)` to `out` atomically; returns `out`."""
    from harness.io import write_text_atomic

    return write_text_atomic(out, landing_fragment(tables, figure))


def _cmd(a: argparse.Namespace) -> None:
    write_landing([Path(t) for t in a.tables], Path(a.figure), Path(a.out))


def add_command(sub: argparse._SubParsersAction) -> None:
    """Register `report-landing` (harness/cli.py)."""
    p = sub.add_parser("report-landing", help="headline tables + Dice-vs-labeled figure -> the report's landing page")
    p.add_argument("--tables", nargs="+", required=True, help="HTML table pages, in display order")
    p.add_argument("--figure", required=True, help="the Dice-vs-labeled PNG")
    p.add_argument("--out", required=True, help="destination HTML fragment")
    p.set_defaults(func=_cmd)
