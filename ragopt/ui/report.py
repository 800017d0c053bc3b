"""Reports: a notebook executed headless with papermill and exported to HTML.

The notebooks are the report: the same cells a user runs interactively make
the figures in the HTML, with the values they record (scrapbook) readable by
tests. Plotly figures are embedded with plotly.js inline, so the HTML opens
without network access.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from ragopt.assets import notebooks_dir

NOTEBOOKS = notebooks_dir()


def notebook_path(name: str) -> Path:
    """``01_baseline_profile`` or a path to a notebook."""
    path = Path(name)
    if path.suffix != ".ipynb":
        path = NOTEBOOKS / f"{name}.ipynb"
    if not path.exists():
        choices = ", ".join(p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb")))
        raise FileNotFoundError(f"no notebook {name!r} (available: {choices})")
    return path


def execute_notebook(name: str, parameters: Optional[Dict[str, Any]] = None, executed: Optional[Path] = None,
                     timeout_s: int = 3600, stream_output: bool = False) -> Path:
    """Run a notebook top to bottom with papermill; returns the executed copy.

    ``stream_output``: the cells' printed output goes to this process's stdout
    and stderr as it comes (a long report shows its progress in the shell).
    """
    import papermill

    source = notebook_path(name)
    executed = Path(executed or Path("reports") / f"{source.stem}.executed.ipynb")
    executed.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    papermill.execute_notebook(
        str(source),
        str(executed),
        parameters=parameters or {},
        cwd=str(source.parent),
        kernel_name="python3",
        execution_timeout=timeout_s,
        progress_bar=False,
        stdout_file=sys.stdout if stream_output else None,
        stderr_file=sys.stderr if stream_output else None,
    )
    return executed


def export_html(executed: Path, out_html: Path) -> Path:
    """The executed notebook as one self-contained HTML page, code cells hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(executed), as_version=4))
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(body, encoding="utf-8")
    return out_html


def build_report(name: str, out_html: str | Path, parameters: Optional[Dict[str, Any]] = None, stream_output: bool = True) -> Path:
    """Execute notebook ``name`` with ``parameters`` and write its HTML to ``out_html``."""
    out_html = Path(out_html)
    executed = execute_notebook(name, parameters, out_html.with_suffix(".ipynb"), stream_output=stream_output)
    return export_html(executed, out_html)


def recorded_values(executed: str | Path) -> Dict[str, Any]:
    """The values an executed notebook recorded with ``scrapbook.glue``."""
    import scrapbook

    return {name: scrap.data for name, scrap in scrapbook.read_notebook(str(executed)).scraps.items()}
