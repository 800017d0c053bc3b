"""Notebook runs shared by the notebook and report tests: each notebook runs once per parameter set."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ragopt.measure.workloads import synthetic_corpus
from ragopt.ui.report import execute_notebook, recorded_values

SMOKE_DOCS = 3
REPORT_PARAMETERS = {"sim_preset": "fast", "variants": "minimal", "repeats": 1}


def pytest_collection_modifyitems(items):
    for item in items:  # every test here executes notebooks (or builds the report): the slow lane
        if "tests/notebooks/" in str(item.fspath):
            item.add_marker(pytest.mark.notebook)


@pytest.fixture(scope="session")
def notebook_workspace(tmp_path_factory) -> Path:
    """One folder for all notebook runs of this test session."""
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="session")
def smoke_corpus(notebook_workspace) -> Path:
    """Three small generated documents."""
    folder = notebook_workspace / "corpus"
    synthetic_corpus(folder, SMOKE_DOCS, paragraphs_per_doc=1)
    return folder


@pytest.fixture(scope="session")
def run_notebook(notebook_workspace):
    """``run_notebook(name, **parameters)``: the notebook's glued values (each parameter set runs once)."""

    @functools.lru_cache(maxsize=None)
    def executed(name: str, parameters_json: str) -> dict:
        out = notebook_workspace / f"{name}.{len(list(notebook_workspace.glob(name + '*')))}.executed.ipynb"
        execute_notebook(name, json.loads(parameters_json), out, timeout_s=900)
        return recorded_values(out)

    return lambda name, **parameters: executed(name, json.dumps(parameters, sort_keys=True))


@pytest.fixture(scope="session")
def report_06(notebook_workspace, smoke_corpus) -> dict:
    """The 06 report built once through ``ragopt report``: its HTML, executed notebook and glued values."""
    out_html = notebook_workspace / "report" / "report.html"
    out_dir = notebook_workspace / "report" / "runs"
    command = [
        sys.executable, "-m", "ragopt.cli", "report", "--notebook", "06_ablation_report", "--out", str(out_html),
        "--out-dir", str(out_dir), "--corpus", str(smoke_corpus), "--parameters", json.dumps(REPORT_PARAMETERS),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    executed_notebook = out_html.with_suffix(".ipynb")
    return {"html": out_html, "executed": executed_notebook, "values": recorded_values(executed_notebook),
            "out_dir": out_dir, "parameters": REPORT_PARAMETERS, "stdout": completed.stdout}
