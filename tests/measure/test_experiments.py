"""RAG-Anything's own entry points (the baseline) on bad input, and the ``bench --baseline`` CLI.

What a user should see when a folder holds files that cannot be ingested: one
failed row per bad file, naming the file and the reason, while every good file
of the same run is still ingested. Files whose suffix no parser reads are not
documents of the corpus at all: neither mode picks them up.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragopt.config import RagoptConfig
from ragopt.measure.tables import BASELINE_FIGURES
from ragopt.measure.experiments import BASELINE_MODES, profile
from ragopt.measure.run import Run

from corpora import ALPHA, BAD_FILES, BETA, GOOD_FILES, write_bad_files, write_good_files  # noqa: E402  (tests/ is on sys.path)


@pytest.fixture(scope="session")
def messy_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("messy-corpus")
    write_good_files(folder)
    write_bad_files(folder)
    (folder / "notes.xyz").write_text("a format no parser reads\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def messy_runs(messy_corpus, tmp_path_factory):
    config = RagoptConfig(sim_preset="fast")
    return {
        mode: profile(mode, messy_corpus, config, working_dir=tmp_path_factory.mktemp(f"messy-{mode}"))
        for mode in BASELINE_MODES
    }


def _rows_by_name(run):
    return {Path(row.file).name: row for row in run.docs.itertuples(index=False)}


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_each_bad_file_gets_a_failed_row_naming_the_file_and_the_reason(messy_runs, messy_corpus, mode):
    run = messy_runs[mode]
    rows = _rows_by_name(run)
    for name, reason in BAD_FILES.items():
        assert name in rows, f"{mode}: no row for {name}; rows: {sorted(rows)}"
        row = rows[name]
        assert row.status == "failed"
        assert row.stage == "parse"
        assert str(messy_corpus / name) in row.error
        assert reason in row.error
    assert run.summary()["docs_failed"] == len(BAD_FILES)


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_good_files_in_the_same_run_are_still_ingested(messy_runs, mode):
    run = messy_runs[mode]
    rows = _rows_by_name(run)
    for name in GOOD_FILES:
        assert rows[name].status == "ok", f"{mode}: {name}: {rows[name].error}"
        assert rows[name].error is None
    summary = run.summary()
    assert summary["docs_ok"] == 3
    # The failures cost no LLM work and do not upset the counters.
    assert summary["llm_calls"] == run.meta["simulator"]["calls"] > 0
    assert summary["llm_calls_failed"] == 0


@pytest.mark.parametrize("mode", BASELINE_MODES)
def test_unsupported_suffixes_are_not_part_of_the_corpus(messy_runs, mode):
    run = messy_runs[mode]
    assert "notes.xyz" not in _rows_by_name(run)
    assert not run.events["file_path"].fillna("").str.endswith("notes.xyz").any()
    assert run.summary()["docs_total"] == 3 + len(BAD_FILES)


@pytest.mark.isolated
def test_bench_baseline_cli_prints_one_json_line_and_writes_the_run_records(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "alpha.txt").write_text(ALPHA, encoding="utf-8")
    (corpus / "beta.md").write_text(BETA, encoding="utf-8")
    out_dir = tmp_path / "runs"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGOPT_")}
    env.update(RAGOPT_SIM_PRESET="fast", TMPDIR=str(scratch), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    completed = subprocess.run(
        [sys.executable, "-m", "ragopt.cli", "bench", "--baseline", "--corpus", str(corpus), "--out-dir", str(out_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    lines = completed.stdout.strip().splitlines()
    assert "SIMULATED" in completed.stdout
    figures = json.loads(lines[-1])

    assert figures["corpus"] == str(corpus)
    for mode in ("rag_batch", "rag_folder"):
        head = figures[mode]
        for key in BASELINE_FIGURES:
            assert key in head, f"{mode}: missing {key}"
        assert head["llm_calls"] == head["simulator_llm_calls"] > 0
        assert head["embedding_calls"] > 0 and head["embedding_texts"] >= head["embedding_calls"]
        assert head["docs_per_min"] > 0 and head["wall_over_limit"] > 0
        assert head["docs_ok"] == 2 and head["docs_failed"] == 0
        assert head["simulated_llm"] is True

        record = out_dir / f"{mode}.json"
        assert record.is_file()
        run = Run.from_json(record)
        assert run.label == mode and run.meta["mode"] == mode
        assert run.meta["config"]["sim_preset"] == "fast"
        assert run.summary()["llm_calls"] == head["llm_calls"]
