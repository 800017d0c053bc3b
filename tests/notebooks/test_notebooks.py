"""Every notebook runs top to bottom with smoke parameters, and the values it records are right.

Each notebook is executed headless with papermill (``ragopt.report.execute_notebook``)
on a tiny generated corpus with the fast simulator preset; the tests read what it
recorded with ``scrapbook.glue`` (``ragopt.report.recorded_values``) and check it
against the corpus, the run records it wrote, and what each experiment must show.
The 06 report is built once, through ``ragopt report``, and shared with
tests/test_report.py (``report_06``).

Also here: the sweep panel of ``ragopt.widgets`` driven headless, through the
button's callback.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ragopt.measure.ablation import ALL_ON, SHIPPED
from ragopt.measure.steps import GROUPS
from ragopt.measure.run import Run
from ragopt.ui.report import NOTEBOOKS

SMOKE_DOCS = 3
MODES = ("rag_batch", "rag_folder", "rag_folder_tuned", "ragopt")
NOTEBOOK_NAMES = ("01_baseline_profile", "02_parallel_batch", "03_content_cache", "04_memory", "05_gpu", "06_ablation_report",
                  "07_your_stack", "08_plan")



def test_every_notebook_has_a_tagged_parameters_cell_and_no_outputs():
    import nbformat

    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(NOTEBOOK_NAMES)
    for name in NOTEBOOK_NAMES:
        notebook = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
        tagged = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        assert len(tagged) == 1, name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name} is stored with outputs"


def test_01_baseline_profile(run_notebook, smoke_corpus, notebook_workspace):
    values = run_notebook("01_baseline_profile", corpus=str(smoke_corpus), sim_preset="fast", out_dir=str(notebook_workspace / "runs01"))
    assert set(values["baseline"]) == {"rag_batch", "rag_folder"}
    for mode, figures in values["baseline"].items():
        assert figures["docs_ok"] == SMOKE_DOCS, mode
        assert figures["docs_per_min"] > 0
        assert figures["simulated_llm"] is True
    for record in values["run_records"]:
        assert Run.from_json(record).summary()["docs_ok"] == SMOKE_DOCS


def test_02_parallel_batch_before_after_and_sweep(run_notebook, smoke_corpus, notebook_workspace):
    values = run_notebook(
        "02_parallel_batch", corpus=str(smoke_corpus), sim_preset="fast", out_dir=str(notebook_workspace / "runs02"),
        sweep=[{"concurrency": 4}],
    )
    assert values["corpus_docs"] == SMOKE_DOCS
    assert values["simulated"] is True
    for mode in MODES:
        assert values["docs_ok"][mode] == SMOKE_DOCS, mode
        assert values["docs_per_min"][mode] > 0
        # The glued figures are those of the run record the notebook wrote.
        assert Run.from_json(values["run_records"][mode]).summary()["docs_per_min"] == pytest.approx(values["docs_per_min"][mode])
    for baseline in ("rag_folder", "rag_batch", "rag_folder_tuned"):
        assert values["speedup"][f"ragopt vs {baseline}"] == pytest.approx(values["docs_per_min"]["ragopt"] / values["docs_per_min"][baseline])
    # The staircase: all off, then one optimization more per step, each step a measured run of the corpus.
    steps = values["steps"]
    assert [s["label"] for s in steps] == ["ragopt, all off"] + [f"+ {name}" for _, names in GROUPS for name in names]
    assert [len(s["switched_on"]) for s in steps] == list(range(len(steps)))
    assert all(s["docs_ok"] == SMOKE_DOCS and s["docs_per_min"] > 0 for s in steps)
    # The panel's button callback ran ragopt once with K=4 and the figure gained its point.
    (point,) = values["sweep_points"]
    assert point["concurrency"] == 4 and point["llm_slots"] == 4
    assert point["docs_ok"] == SMOKE_DOCS and point["docs_per_min"] > 0
    assert point["simulated_llm"] is True
    assert values["sweep_trace_points"]["before"] == 0
    assert values["sweep_trace_points"]["after"] == 2  # one point in each of the two panels


def test_03_content_cache_reaches_the_theoretical_maximum(run_notebook, smoke_corpus):
    values = run_notebook("03_content_cache", corpus=str(smoke_corpus), duplicate_fraction=0.5)
    # 3 originals and 3 duplicate requests: one renamed copy, one copy in a sub-folder, one touched original.
    assert values["workload_counts"] == {"originals": 3, "renamed": 1, "copied": 1, "touched": 1}
    assert values["workload_files"] == {"1. folder with renames and copies": 5, "2. touched files again": 1, "3. unchanged rerun": 5}
    rates = values["hit_rates"]
    assert rates["ragopt ContentCache"] == pytest.approx(rates["theoretical max"]) == pytest.approx(8 / 11)
    assert rates["RAG-Anything parse cache"] == pytest.approx(5 / 11)  # the unchanged rerun only
    by_pass = {row["pass"]: row for row in values["hit_rates_by_pass"]}
    for row in by_pass.values():
        assert row["ragopt ContentCache"] == pytest.approx(row["theoretical max"]), row["pass"]
    # Renamed, copied and touched files all miss in RAG-Anything's path+mtime keyed cache.
    first_two = values["hit_rates_passes_1_2"]
    assert first_two["ragopt ContentCache"] == pytest.approx(first_two["workload hit_rate_max"]) == pytest.approx(0.5)
    assert first_two["RAG-Anything parse cache"] == 0
    assert by_pass["3. unchanged rerun"]["RAG-Anything parse cache"] == 1
    assert values["second_run_parser_calls"] == {"ragopt": 0, "raganything": 1, "minimum": 0}


def test_04_memory_budget_and_repeated_experiment_leak(run_notebook):
    cycles = 2
    values = run_notebook("04_memory", sim_preset="fast", cycles=cycles, cycle_docs=2, cycle_paragraphs=1, ballast_mb=200, budget_docs=4)
    with_release, without = "with release_rag", "without release_rag"
    # Without release_rag every instance stays alive (atexit holds it); with it, none does.
    assert values["instances_alive"] == {with_release: 0, without: cycles}
    assert values["objects_growth"][with_release] < values["objects_growth"][without]
    assert values["leak_check"][without]["instance_alive"] is True
    assert values["leak_check"][with_release]["instance_alive"] is False
    # RSS is measured and recorded per cycle (it is too noisy on a tiny corpus to compare the two series).
    for name in (with_release, without):
        assert math.isfinite(values["rss_growth_mb"][name])
        assert len(values["rss_delta_per_cycle"][name]) == cycles
    # The ballast held RSS over the budget on a real ingestion: the gate closed, and once it was freed
    # every document went through.
    budget = values["memory_budget"]
    assert budget["held_count"] >= 1 and budget["held_seconds"] > 0
    assert budget["peak_rss_mb"] > budget["max_mb"]
    assert budget["documents"] == {"ok": 4, "failed": 0, "skipped": 0}
    assert values["simulated"] is True


def test_05_gpu_recovers_from_injected_out_of_memory(run_notebook):
    values = run_notebook("05_gpu", n_texts=32, batch_sizes=[1, 16], start_batch=32, inject_oom_above=8)
    device = values["device"]
    if not device["cuda_available"]:
        assert device["device"] == "cpu"
        assert device["free_memory_bytes"] is None  # not measured without a GPU
    assert all(rate > 0 for rate in values["throughput_texts_per_s"].values())
    oom = values["injected_oom"]
    assert oom["injected"] == oom["ooms"] > 0
    assert oom["shrinks"] >= 2  # 32 -> 16 -> 8
    assert max(oom["batch_sizes"]) <= 8
    assert sum(oom["batch_sizes"]) == oom["texts"] == 32  # each text once
    assert oom["max_abs_diff"] < 1e-4
    fallback = values["cpu_fallback"]
    assert fallback["fallbacks"] == 1 and fallback["cpu_calls"] >= 1
    assert fallback["max_abs_diff"] < 1e-4


def test_06_ablation_report_values(report_06):
    report = report_06
    values = report["values"]
    assert values["simulated"] is True
    assert values["variants"] == [SHIPPED, ALL_ON]
    assert len(values["run_records"]) == 2 * report["parameters"]["repeats"]
    for row in values["ablation"]:
        assert row["docs_ok"] == SMOKE_DOCS, row["variant"]
        assert row["docs_per_min"] > 0, row["variant"]
        assert Path(row["record"]).parent == report["out_dir"]
    # The headline is measured: ragopt against the one baseline run here, from the run records.
    headline = values["headline"]
    assert headline["best_raganything"] == SHIPPED
    recorded = {row["variant"]: row["docs_per_min"] for row in values["ablation"]}
    assert headline["ragopt"]["docs_per_min"] == pytest.approx(recorded[ALL_ON])
    assert headline["speedup_median"] == pytest.approx(recorded[ALL_ON] / recorded[SHIPPED])
    assert values["verdicts"] == []  # the quick variants have no "all but X": no verdict is made up
    # The before/after table is before_after() of the two records it names.
    from ragopt.measure.tables import before_after

    records = values["before_after_records"]
    expected = before_after(Run.from_json(records["before"]), Run.from_json(records["after"]))
    for shown, row in zip(values["before_after"], expected.to_dict("records")):
        assert shown["metric"] == row["metric"]
        for column in ("before", "after", "after/before"):
            if row[column] is None or (isinstance(row[column], float) and math.isnan(row[column])):
                assert shown[column] is None
            else:
                assert shown[column] == pytest.approx(row[column])


def test_07_your_stack_profiles_the_users_rag_as_shipped_and_optimized(run_notebook, smoke_corpus, notebook_workspace):
    values = run_notebook("07_your_stack", corpus=str(smoke_corpus), sim_preset="fast", slots=4, out_dir=str(notebook_workspace / "runs07"))
    assert values["corpus_docs"] == SMOKE_DOCS and values["simulated"] is True
    assert values["docs_ok"] == {"shipped": SMOKE_DOCS, "ragopt": SMOKE_DOCS}
    for name, record in values["run_records"].items():
        run = Run.from_json(record)
        assert run.summary()["docs_per_min"] == pytest.approx(values["docs_per_min"][name]) and run.simulated
        assert run.meta["slots"] == 4
    assert values["speedup"]["ragopt vs shipped"] == pytest.approx(values["docs_per_min"]["ragopt"] / values["docs_per_min"]["shipped"])
    # Both runs built the knowledge base in the same folder: the graphs are compared, and the same.
    assert values["graphs"] == {"comparable": True, "same": True}


def test_08_plan_predicts_its_own_sample_and_the_panel_updates(run_notebook, smoke_corpus, notebook_workspace):
    values = run_notebook("08_plan", corpus=str(smoke_corpus), sim_preset="fast", out_dir=str(notebook_workspace / "plan08"))
    plan = values["plan"]
    assert values["documents"] == values["sample_documents"] == SMOKE_DOCS  # under 10 documents: all are the sample
    assert plan["figures"] == "prediction" and plan["simulated_llm"] is True
    # The corpus is its own sample: the predicted calls are the ones the sample run made.
    assert plan["totals"]["calls"]["prediction"] == values["sample_calls_measured"] > 0
    for mode in ("ragopt", "rag_folder"):
        wall = plan["modes"][mode]["wall_s"]
        assert wall["lo"] <= wall["prediction"] <= wall["hi"]
    walls = {(row["slots"], row["parse_workers"]): row["wall_s"] for row in values["what_if"]}
    assert all(walls[(k, w)] >= walls[(k2, w)] for (k, w) in walls for (k2, w2) in walls if w2 == w and k2 > k)
    panel = values["panel"]
    assert panel["wall_after"] <= panel["wall_before"]  # four times the slots never predicts a slower run
    assert "PREDICTION" in panel["readout"] and "SIMULATED" in panel["readout"]


# --------------------------------------------------------------------------- widgets


def _fake_runner(settings):
    """Stands in for run_point: figures derived from the settings, instantly."""
    from ragopt.ui.sweep import DEFAULT_SETTINGS, _series_label

    point = {key: settings[key] for key in DEFAULT_SETTINGS}
    point.update(docs_total=2, docs_ok=2, docs_per_min=10.0 * settings["concurrency"], wall_over_limit=8.0 / settings["concurrency"],
                 simulated_llm=True, label=f"K={settings['concurrency']}", series=_series_label(point), record=None)
    return point


def test_sweep_panel_button_updates_the_figure_in_place(tmp_path):
    from ragopt.ui.sweep import sweep_panel

    panel = sweep_panel(tmp_path, runner=_fake_runner)
    figure = panel.figure
    assert len(figure.data) == 0
    panel.set(concurrency=4)
    panel.button.click()  # the callback a browser click runs
    assert panel.last_error is None
    assert panel.figure is figure  # updated in place, not replaced
    assert [list(trace.y) for trace in figure.data] == [[40.0], [2.0]]
    assert "simulated LLM service" in figure.layout.title.text
    panel.set(concurrency=16)
    panel.button.click()
    assert [list(trace.x) for trace in figure.data] == [[4, 16], [4, 16]]
    assert list(figure.data[0].y) == [40.0, 160.0]
    panel.set(cache=False, preset="fast", rate_429=0.1)
    panel.button.click()
    assert len(figure.data) == 4  # a new series: its own line in both panels
    assert len(panel.results) == 3
    assert list(panel.results["cache"]) == [True, True, False]


def test_sweep_panel_shows_a_failed_run_without_raising(tmp_path):
    from ragopt.ui.sweep import sweep_panel

    def failing(settings):
        raise RuntimeError("simulated failure")

    panel = sweep_panel(tmp_path, runner=failing)
    panel.button.click()
    assert "simulated failure" in panel.last_error
    assert len(panel.results) == 0 and len(panel.figure.data) == 0


def test_point_config_maps_the_sweep_settings_onto_the_config(tmp_path):
    from ragopt.config import RagoptConfig
    from ragopt.ui.sweep import point_config, run_point

    config = point_config({"concurrency": 3, "cache": False, "preset": "fast", "rate_429": 0.2, "cache_dir": str(tmp_path)}, RagoptConfig())
    assert config.max_concurrent_processing == 3
    assert config.enable_parse_cache is False
    assert (config.sim_preset, config.sim_rate_429) == ("fast", 0.2)
    assert config.cache_storage == str(tmp_path)
    with pytest.raises(ValueError, match="corpus"):
        run_point({"concurrency": 2})


def test_sweep_panel_falls_back_to_a_plain_figure_without_anywidget(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    from ragopt.ui.sweep import sweep_panel

    class MissingFigureWidget:  # what plotly offers when anywidget is not installed
        def __init__(self, *args, **kwargs):
            raise ImportError("Please install anywidget to use the FigureWidget class")

    monkeypatch.setattr(go, "FigureWidget", MissingFigureWidget)
    panel = sweep_panel(tmp_path, runner=_fake_runner)
    assert type(panel.figure) is go.Figure
    panel.button.click()
    assert panel.last_error is None
    assert [list(trace.y) for trace in panel.figure.data] == [[80.0], [1.0]]
