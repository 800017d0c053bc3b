"""``bench_query.py --smoke``: the benchmark runs and says what it measured (behaviour only, no timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_query.py"
KEYS = ("p95_s_c20_idle_raganything", "p95_s_c20_idle_ragopt", "p95_s_c20_ingesting_raganything", "p95_s_c20_ingesting_ragopt")


@pytest.mark.slow
def test_bench_query_smoke_prints_the_guides_rows_and_one_json_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--work-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert figures["simulated"] is True and "SIMULATED" in done.stdout
    for key in KEYS:
        assert figures[key] is not None and figures[key] > 0, key
    assert "| concurrency | P95 raganything idle (s) |" in done.stdout and any(line.startswith("| 20 |") for line in lines)
    for variant in ("raganything", "ragopt"):
        assert figures[f"errors_c20_idle_{variant}"] == 0
        assert figures["cache"][variant]["repeat_hits"] == figures["cache"][variant]["repeated"] > 0
    # LightRAG's own key serves the answers from before the new document; ragopt's serves none.
    assert figures["cache"]["raganything"]["stale_after_ingest"] > 0
    assert figures["cache"]["ragopt"]["stale_after_ingest"] == 0


def test_a_stalled_variant_prints_where_each_task_waits_and_exits_stalled():
    from ragopt.measure.bench.query import STALLED

    code = ("import asyncio\nfrom ragopt.measure.bench.query import _within\n"
            "async def stuck_in_a_merge():\n    await asyncio.Event().wait()\n"
            "asyncio.run(_within(stuck_in_a_merge(), 1.0))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == STALLED
    assert "still running after 1 s" in done.stderr
    assert "stuck_in_a_merge (<string>:4)" in done.stderr


def test_a_variant_whose_process_fails_comes_back_failed_without_rows(tmp_path):
    from ragopt.config import RagoptConfig
    from ragopt.measure.bench.query import measure_variant_apart

    missing = tmp_path / "no-knowledge-base"
    result = measure_variant_apart("ragopt", missing, tmp_path, RagoptConfig(), [1], 1, tmp_path, timeout_s=120)
    assert result["rows"] == [] and result["failed"] == "exit code 1"
