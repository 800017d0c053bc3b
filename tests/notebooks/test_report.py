"""The HTML report (notebook 06 through ``ragopt report``): what a reader sees is what was measured.

The report is built once with smoke parameters (shared with tests/test_notebooks.py).
The before/after table in the HTML is read back cell by cell and compared with
``before_after`` recomputed from the run records the page names; the page must say
that it was measured on the simulated LLM, carry plotly.js inline (it opens
offline), and hide the code.
"""

from __future__ import annotations

import math
import re

import pytest
from bs4 import BeautifulSoup

from ragopt.measure.tables import GUIDE_ROWS, before_after
from ragopt.measure.run import Run

NOT_MEASURED = "not measured"


@pytest.fixture(scope="module")
def report(report_06):
    built = report_06
    return {**built, "text": built["html"].read_text(encoding="utf-8")}


@pytest.fixture(scope="module")
def page(report):
    return BeautifulSoup(report["text"], "html.parser")


def _cell_value(text: str):
    text = text.strip()
    return None if text == NOT_MEASURED else float(text)


def _matches(shown, expected) -> bool:
    """A shown value (4 significant digits, or 'not measured') against the recomputed one."""
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        return shown is None
    return shown is not None and shown == pytest.approx(float(expected), rel=1e-3, abs=1e-9)


def test_before_after_table_shows_the_values_of_the_run_records_it_names(page):
    table = page.find("table", id="before-after")
    assert table is not None, "no before/after table in the report"
    caption = table.find_next("p")
    before_record, after_record = [code.get_text() for code in caption.find_all("code")]
    expected = before_after(Run.from_json(before_record), Run.from_json(after_record))

    rows = table.find("tbody").find_all("tr")
    assert [row.find_all("td")[0].get_text() for row in rows] == [name for name, _ in GUIDE_ROWS]
    for row, (_, want) in zip(rows, expected.iterrows()):
        cells = [td.get_text() for td in row.find_all("td")]
        for text, column in zip(cells[1:], ("before", "after", "after/before")):
            assert _matches(_cell_value(text), want[column]), f"{want['metric']} / {column}: shown {text!r}, measured {want[column]!r}"
    # Measured values only: the baseline has no content-addressed parse cache to report on.
    hit_rate_row = rows[[name for name, _ in GUIDE_ROWS].index("Parse cache hit rate")]
    assert hit_rate_row.find_all("td")[1].get_text() == NOT_MEASURED
    # The throughput row is a real measurement on both sides.
    throughput = [_cell_value(td.get_text()) for td in rows[0].find_all("td")[1:3]]
    assert all(value is not None and value > 0 for value in throughput)


def test_the_records_named_in_the_page_are_the_ones_the_notebook_recorded(page, report):
    caption = page.find("table", id="before-after").find_next("p")
    named = [code.get_text() for code in caption.find_all("code")]
    recorded = report["values"]["before_after_records"]
    assert named == [recorded["before"], recorded["after"]]
    assert set(named) <= set(report["values"]["run_records"])


def test_report_says_it_was_measured_on_the_simulated_llm(report, page):
    text = page.get_text(" ")
    assert "measured on the simulated LLM service" in text
    assert "(simulated LLM service)" in report["text"]  # chart titles


def test_plotly_is_embedded_inline_and_nothing_comes_from_its_cdn(report):
    html = report["text"]
    assert re.search(r"plotly\.js v\d", html), "plotly.js bundle not embedded"
    assert not re.search(r"<script[^>]+src=[\"'][^\"']*cdn\.plot\.ly", html)
    assert "Plotly.newPlot" in html


def test_the_page_opens_with_the_headline_before_any_figure(page):
    text = page.get_text(" ")
    assert text.index("Headline") < text.index("Throughput and distance")
    assert "ragopt ingests" in text and "docs/min" in text.split("Throughput and distance")[0]


def test_the_report_command_shows_each_runs_progress_while_it_runs(report):
    lines = [line for line in report["stdout"].splitlines() if line.startswith("[")]
    total = 2 * report["parameters"]["repeats"]
    assert [line.split("]")[0] for line in lines] == [f"[{i}/{total}" for i in range(1, total + 1)]
    assert all("elapsed, about" in line and "left" in line for line in lines)


def test_code_cells_are_hidden(report):
    assert "run_variants(" not in report["text"]
    assert "import scrapbook" not in report["text"]
