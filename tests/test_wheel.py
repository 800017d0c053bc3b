"""ragopt from a wheel, not a checkout: the package finds its sample corpus and notebooks, and runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.isolated  # builds a wheel, a venv, and runs ragopt in fresh processes


def _run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding only the wheel; its dependencies come from this environment's site-packages
    by a path entry (not a site dir, so this checkout's editable install is not seen)."""
    work = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(ROOT)])
    [wheel] = (work / "dist").glob("ragopt-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return venv


def test_the_wheel_is_imported_from_its_install_and_finds_its_data(installed):
    code = ("import json, ragopt, ragopt.measure.workloads as w, ragopt.ui.report as r; "
            "print(json.dumps([ragopt.__file__, str(w.SAMPLE_CORPUS), str(r.NOTEBOOKS), len(w.corpus_files(w.SAMPLE_CORPUS))]))")
    where, sample, notebooks, documents = json.loads(_run([str(installed / "bin" / "python"), "-c", code], cwd="/").stdout)
    assert where.startswith(str(installed)) and sample.startswith(str(installed)) and notebooks.startswith(str(installed))
    assert documents == 9 and Path(notebooks, "06_ablation_report.ipynb").is_file()


def test_ragopt_bench_help_and_a_smoke_profile_run_from_the_wheel(installed, tmp_path):
    ragopt = str(installed / "bin" / "ragopt")
    assert "--repeats" in _run([ragopt, "bench", "--batch", "--help"], cwd="/").stdout
    env = {**os.environ, "RAGOPT_SIM_PRESET": "fast", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "run.json"
    done = _run([ragopt, "profile", "--mode", "ragopt", "--synthetic", "2", "--out", str(out),
                 "--working-dir", str(tmp_path / "kb")], cwd="/", env=env)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["docs_ok"] == 2 and summary["simulated_llm"] is True and out.is_file()
