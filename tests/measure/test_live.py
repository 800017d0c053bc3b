"""The live metrics source: what it counts, how it reads, and that a pushed copy reads the same."""

from __future__ import annotations

import warnings

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ragopt.measure.live import LiveMetrics, families_from_json, families_to_json, headline, samples
from ragopt.measure.live_push import PushPublisher
from ragopt.ui.dashboard import Dashboard

MS = 1_000_000


def _a_run(live: LiveMetrics) -> LiveMetrics:
    """Calls and events as the observation layer and RAG-Anything's CallbackManager deliver them."""
    live.llm_call(0, 500 * MS, {"kind": "extract", "prompt_tokens": 100, "completion_tokens": 40, "token_source": "simulator",
                                "service_ns": 400 * MS, "queue_wait_ns": 100 * MS, "outcome": "ok"}, None)
    live.llm_call(0, 10 * MS, {"kind": "extract", "prompt_tokens": 100, "completion_tokens": 0, "outcome": "429"}, RuntimeError())
    live.llm_call(0, 200 * MS, {"kind": "summary", "prompt_tokens": 30, "completion_tokens": 10}, None)
    live.embedding_call(0, 50 * MS, 16)
    live.embedding_call(0, 20 * MS, 4, 90)  # the observation layer may also report tokens
    live.flush(0, 5 * MS, "entities")
    live.cache_lookup("llm_cache", True)
    live.cache_lookup("llm_cache", False)
    for name in ("a.txt", "b.pdf", "c.md"):
        live.document_event("parse_start", file_path=name, doc_id=name)
        live.document_event("parse_complete", file_path=name, duration_seconds=0.25, cache_hit=name == "a.txt")
    live.document_event("document_complete", file_path="a.txt", duration_seconds=3.0)
    live.document_event("document_error", file_path="b.pdf", duration_seconds=1.0, error="boom")
    live.document_event("document_skipped", file_path="d.txt", duration_seconds=0.0)
    return live


def test_the_numbers_count_what_was_reported():
    numbers = _a_run(LiveMetrics("t", slots=8).start()).headline()
    assert (numbers["docs_ok"], numbers["docs_failed"], numbers["docs_skipped"], numbers["docs_in_flight"]) == (1, 1, 1, 1)
    assert (numbers["llm_calls"], numbers["llm_errors"], numbers["llm_429"]) == (3, 1, 1)
    assert (numbers["prompt_tokens"], numbers["completion_tokens"]) == (230, 50)
    assert (numbers["embedding_calls"], numbers["embedding_texts"], numbers["storage_flushes"]) == (2, 20, 1)
    assert (numbers["llm_cache_hits"], numbers["llm_cache_misses"], numbers["llm_cache_hit_rate"]) == (1, 1, 0.5)
    assert (numbers["parse_cache_hits"], numbers["parse_cache_misses"]) == (1, 2)
    assert numbers["raganything_parse_cache_hit_rate"] is None  # no lookup: not a rate of 0
    assert numbers["llm_slots"] == 8 and numbers["docs_per_min"] > 0 and numbers["tokens_per_s"] > 0


def test_stage_busy_seconds_group_llm_kinds_as_the_run_does():
    live = _a_run(LiveMetrics("t").start())
    stages = {dict(labels)["stage"]: value for (name, labels), value in samples(live.families()).items()
              if name == "ragopt_stage_busy_seconds_total"}
    # The extract call's reported busy time, the unreported ones' whole call (as the Recorder counts them).
    assert stages["llm_extract"] == pytest.approx(0.41) and stages["llm_summary"] == pytest.approx(0.2)
    assert stages["parse"] == pytest.approx(0.75) and stages["embed"] == pytest.approx(0.07)


def test_simulated_is_seen_in_the_calls_unless_told():
    live = LiveMetrics("t")
    assert live.headline()["simulated"] is None
    live.llm_call(0, MS, {"kind": "query", "token_source": "simulator"}, None)
    assert live.headline()["simulated"] is True
    info = [s for s in text_string_to_metric_families(generate_latest(live.registry).decode())
            if s.name == "ragopt_run_info"][0]
    assert info.samples[0].labels["simulated"] == "true"
    told = LiveMetrics("t", simulated=False)
    told.llm_call(0, MS, {"kind": "query", "token_source": "simulator"}, None)
    assert told.headline()["simulated"] is False


def test_llm_load_comes_from_the_simulator():
    class Simulator:
        in_flight, queued = 5, 3

    numbers = LiveMetrics("t", slots=8, simulator=Simulator()).headline()
    assert (numbers["llm_in_flight"], numbers["llm_queued"], numbers["llm_slots"]) == (5, 3, 8)
    # Without a simulator: the calls ragopt's counted layer has out; unknown stays unknown.
    assert LiveMetrics("t", stats={"llm": {"in_flight": 2}}).headline()["llm_in_flight"] == 2
    assert LiveMetrics("t").headline()["llm_queued"] is None


def test_the_memory_gate_and_retries_are_read_when_collected():
    class Budget:
        max_mb, holding, held_count, held_seconds = 100, True, 2, 1.5

    stats = {"llm_retries": {"retries": 4}}
    numbers = LiveMetrics("t", budget=Budget(), stats=stats).headline()
    assert (numbers["gate_holding"], numbers["gate_holds"], numbers["llm_retries"]) == (1, 2, 4)


def test_families_survive_json():
    live = _a_run(LiveMetrics("t", slots=8).start())
    families = live.families()
    assert samples(families_from_json(families_to_json(families))) == samples(families)


def test_a_pushed_run_reads_the_same_on_the_page(tmp_path):
    live = _a_run(LiveMetrics("child", slots=4, simulated=True).start())
    live.finish()  # its numbers stay as they are from here on
    with Dashboard(port=0, interval_s=0.05) as dashboard:
        PushPublisher(dashboard.url).push(live)
        (run, source), = dashboard.sources()
        assert run == live.run_id
        assert headline(samples(source.families()), source.meta()) == live.headline()


def test_a_page_that_is_gone_never_stops_the_run():
    live = LiveMetrics("t").start()
    publisher = PushPublisher("http://127.0.0.1:9", interval_s=0.01, timeout_s=0.5)  # the discard port: nobody serves
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        publisher.publish(live)
        publisher.finish(live)
    assert len([w for w in warned if "did not take" in str(w.message)]) == 1
