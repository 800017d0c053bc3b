"""ENABLE_MONITORING at the entry points: a user's ``ingest`` and the report's isolated runs reach the page."""

from __future__ import annotations

import socket

import pytest

from ragopt.config import RagoptConfig
from ragopt.measure.workloads import synthetic_corpus
from ragopt.ui import monitoring
from ragopt.ui.dashboard import Dashboard


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_ingest_as_a_user_calls_it_starts_the_page_and_shows_the_run(tmp_path):
    from ragopt.engine.build import build_rag
    from ragopt.engine.release import release_rag

    config = RagoptConfig(sim_preset="fast", enable_parse_cache=False, enable_monitoring=True, metrics_port=_free_port())
    rag = build_rag(config, tmp_path / "kb", optimized=True)
    try:
        result = monitoring.ingest(rag, synthetic_corpus(tmp_path / "docs", 2, seed=5, paragraphs_per_doc=1),
                                   config=config, progress=False)
        page = monitoring.publisher_for(config)  # the page this process started, still serving
        assert isinstance(page, Dashboard) and page.port == config.metrics_port
        page.sample()
        run, = page.snapshot()["runs"]
    finally:
        monitoring.stop_serving()
        release_rag(rag)
    assert result.counts()["ok"] == 2
    assert (run["label"], run["done"], run["docs_ok"], run["simulated"]) == ("ingest", True, 2, True)
    assert run["llm_calls"] > 0 and run["llm_slots"] == 8


@pytest.mark.slow
@pytest.mark.isolated
def test_an_isolated_run_publishes_to_the_page_of_its_parent(tmp_path):
    from ragopt.measure.experiments import run_isolated

    with Dashboard(port=0, interval_s=0.2) as page:
        config = RagoptConfig(sim_preset="fast", enable_parse_cache=False, enable_monitoring=True, metrics_port=page.port)
        corpus = tmp_path / "docs"
        synthetic_corpus(corpus, 2, seed=6, paragraphs_per_doc=1)
        recorded = run_isolated("ragopt", corpus, tmp_path / "run.json", config)
        page.sample()
        run, = page.snapshot()["runs"]
    summary = recorded.summary()
    assert (run["label"], run["done"], run["simulated"]) == ("ragopt", True, True)
    # The child's last push came after its last event: the page shows what its run record says.
    assert (run["docs_ok"], run["llm_calls"]) == (summary["docs_ok"], summary["llm_calls"])
