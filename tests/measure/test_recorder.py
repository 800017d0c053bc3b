"""The profiler (Recorder/Run) against the simulator's own counters, on a tiny corpus.

One in-process baseline run per RAG-Anything mode is shared by every assertion
(session fixtures): MiniLM loads once per process, the simulator runs the
"fast" preset, and nothing here asserts on wall-clock time.
"""

import asyncio
import math

import pytest

from ragopt.backends import callinfo
from ragopt.backends.llm_server import SimulatorServer
from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig
from ragopt.config import RagoptConfig
from ragopt.measure.experiments import profile
from ragopt.measure.recorder import Recorder
from ragopt.measure.run import Run
from ragopt.backends import make_backends
from ragopt.measure.workloads import corpus_files

MODES = ("rag_folder", "rag_batch", "ragopt")
RETRIED_429S = 0.2  # ragopt's run meets 429s: each retried attempt is a call of its own

ALPHA = (
    "Ada Okafor of Northwind Labs presented new results on solid-state batteries at a workshop in Lisbon.\n"
    "Helios Energy opened a research office in Osaka to study fraud detection, led by Brian Lindqvist.\n"
)
BETA = (
    "In Nairobi, Chen Moreau signed an agreement between Orion Systems and Cedar Health covering graph databases.\n"
    "Dana Tanaka argued that edge computing will matter more to Orion Systems than carbon accounting.\n"
)
GAMMA = """# Gamma field note

Vega Aerospace hired Emeka Silva from Atlas Freight after the team's work on satellite telemetry in Reykjavik.

| Organization | Site | Budget (k$) | Lead |
|---|---|---|---|
| Vega Aerospace | Reykjavik | 420 | Emeka Silva |
| Atlas Freight | Denver | 180 | Hana Novak |
"""


@pytest.fixture(scope="session")
def config():
    return RagoptConfig(sim_preset="fast")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("profiler-corpus")
    (folder / "alpha.txt").write_text(ALPHA, encoding="utf-8")
    (folder / "beta.txt").write_text(BETA, encoding="utf-8")
    (folder / "gamma.md").write_text(GAMMA, encoding="utf-8")  # its table makes a multimodal call
    return folder


@pytest.fixture(scope="session")
def runs(corpus, config, tmp_path_factory):
    """One run per mode, each on a fresh working dir and a fresh simulator; ragopt with 429s and its retries."""
    configs = {mode: config for mode in MODES}
    configs["ragopt"] = config.replace(sim_rate_429=RETRIED_429S, llm_retries=True)
    return {
        mode: profile(mode, corpus, configs[mode], working_dir=tmp_path_factory.mktemp(f"wd-{mode}"))
        for mode in MODES
    }


def _same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


# --------------------------------------------------------------------------- profiler == simulator


@pytest.mark.parametrize("mode", MODES)
def test_llm_calls_and_busy_time_equal_the_simulators_own_counters(runs, mode):
    run = runs[mode]
    summary, simulator = run.summary(), run.meta["simulator"]
    assert simulator is not None and simulator["calls"] > 0
    assert summary["llm_calls"] == simulator["calls"]
    assert isinstance(summary["llm_busy_ns"], int) and isinstance(simulator["busy_ns"], int)
    assert summary["llm_busy_ns"] == simulator["busy_ns"]
    # The limit is the engine's plan, exactly: planned service seconds over K.
    assert int(run.llm_calls["planned_ns"].sum()) == simulator["planned_ns"]
    assert summary["llm_bound_limit_source"] == "simulator plan"
    assert summary["llm_bound_limit_s"] == simulator["planned_ns"] / 1e9 / simulator["slots"] == simulator["lower_limit_s"]
    assert summary["llm_calls_by_kind"] == simulator["calls_by_kind"]
    # The profiler saw the kinds the simulator reported, not its "unknown" fallback.
    assert "unknown" not in summary["llm_calls_by_kind"]
    assert {"extract", "table"} <= set(summary["llm_calls_by_kind"])
    failed = sum(v for k, v in simulator["calls_by_outcome"].items() if k != "ok")
    assert summary["llm_calls_failed"] == failed
    if mode == "ragopt":  # every retried attempt was seen, and none was given up on
        assert failed == simulator["calls_by_outcome"]["429"] > 0
        assert run.meta["details"]["llm_retries"]["retries"] == failed
        assert summary["docs_ok"] == summary["docs_total"]
    else:
        assert failed == 0


# --------------------------------------------------------------------------- run record


@pytest.mark.parametrize("mode", MODES)
def test_run_record_round_trips_through_json(runs, mode, config, tmp_path):
    run = runs[mode]
    loaded = Run.from_json(run.to_json(tmp_path / "records" / f"{mode}.json"))

    before, after = run.summary(), loaded.summary()
    assert set(before) == set(after)
    different = {k: (before[k], after[k]) for k in before if not _same(before[k], after[k])}
    assert not different
    for name in Run._FRAMES:
        original, reloaded = getattr(run, name), getattr(loaded, name)
        assert reloaded.shape == original.shape, name
        assert list(reloaded.columns) == list(original.columns), name
    assert loaded.llm_calls["service_ns"].dtype == "int64"
    assert loaded.llm_calls["service_ns"].tolist() == run.llm_calls["service_ns"].tolist()
    assert loaded.caches == run.caches

    meta = loaded.meta
    assert meta["config"] == RagoptConfig(**{**config.to_dict(), **{k: meta["config"][k] for k in ("sim_rate_429", "llm_retries")}}).to_dict()
    assert meta["versions"]["raganything"] == "1.4.3"
    assert meta["versions"]["lightrag-hku"] == "1.4.16"
    assert meta["machine"]["cpu_count"] >= 1 and meta["machine"]["python"]
    assert meta["mode"] == mode and meta["label"] == mode
    assert loaded.simulated and meta["simulator"] == run.meta["simulator"]
    # Each run's embedding function has its own input memo, in the embedding worker: it saw every text of the run.
    memo = meta["embedding_input_memo"]
    assert memo["texts"] == run.embedding_calls["texts"].sum() + 1 and 0 <= memo["hits"] < memo["texts"]  # + the warm-up


# --------------------------------------------------------------------------- derived figures


@pytest.mark.parametrize("mode", MODES)
def test_summary_figures_are_consistent_with_the_frames(runs, mode, corpus):
    run = runs[mode]
    s = run.summary()
    slots = run.meta["slots"]
    assert slots == s["llm_slots"] == run.meta["simulator"]["slots"] == SimulatorConfig.preset("fast").slots

    assert s["llm_bound_limit_s"] == pytest.approx(s["llm_planned_s"] / slots)
    assert s["wall_over_limit_measured_busy"] == pytest.approx(s["wall_s"] / (s["llm_busy_ns"] / 1e9 / slots))
    assert s["llm_busy_ns"] == int(run.llm_calls["service_ns"].sum())
    assert s["embedding_calls"] == len(run.embedding_calls) > 0
    assert s["embedding_texts"] == int(run.embedding_calls["texts"].sum()) > 0
    assert s["storage_flushes"] == len(run.flushes) > 0
    assert s["peak_rss_mb"] is not None and s["peak_rss_mb"] > 0

    files = corpus_files(corpus)
    assert s["docs_ok"] == len(files) == s["docs_total"]
    assert s["docs_failed"] == 0
    assert sorted(run.docs["file"]) == sorted(str(p) for p in files)
    assert 1 <= s["llm_max_in_flight"] <= slots


@pytest.mark.parametrize("mode", MODES)
def test_slots_in_use_stay_within_k_and_drain_to_zero(runs, mode):
    run = runs[mode]
    steps = run.llm_slots_in_use()
    assert list(steps.columns) == ["t_s", "in_flight"]
    assert len(steps) == 2 * int((run.llm_calls["service_ns"] > 0).sum())
    assert steps["in_flight"].max() <= run.meta["slots"]
    assert steps["in_flight"].min() >= 0
    assert steps["in_flight"].iloc[-1] == 0
    assert steps["t_s"].is_monotonic_increasing


# --------------------------------------------------------------------------- wrap_llm on its own


async def test_wrap_llm_without_callinfo_counts_the_measured_latency_as_busy():
    recorder = Recorder(slots=2).start()

    async def plain_llm(prompt, **kwargs):
        await asyncio.sleep(0.02)
        return prompt.upper()

    wrapped = recorder.wrap_llm(plain_llm)
    assert await wrapped("hello") == "HELLO"
    assert callinfo.current_call.get() is None  # the wrapper resets its context
    run = recorder.stop()

    assert len(run.llm_calls) == 1
    call = run.llm_calls.iloc[0]
    assert call["kind"] == "other"  # named from the prompt by the observation layer
    assert call["token_source"] == "tokenizer" and call["prompt_tokens"] > 0 and call["completion_tokens"] > 0
    assert call["outcome"] == "ok"
    assert call["error"] is None
    assert call["queue_wait_ns"] == 0
    assert abs(call["service_ns"] - call["latency_s"] * 1e9) < 2  # busy = the whole measured call
    assert call["service_ns"] >= 15_000_000  # it did sleep (a lower bound only)
    summary = run.summary()
    assert summary["llm_busy_ns"] == call["service_ns"]
    assert summary["llm_calls_by_kind"] == {"other": 1}
    # No plan from this backend: the limit is the measured busy time, and says so.
    assert summary["llm_bound_limit_source"] == "measured busy" and summary["llm_planned_s"] is None
    assert summary["llm_bound_limit_s"] == pytest.approx(call["service_ns"] / 1e9 / 2)


async def test_wrap_llm_records_an_exception_by_type_and_reraises_it():
    recorder = Recorder(slots=1).start()

    class Overloaded(RuntimeError):
        pass

    async def failing_llm(prompt, **kwargs):
        await asyncio.sleep(0.001)
        raise Overloaded("engine overloaded")

    wrapped = recorder.wrap_llm(failing_llm)
    with pytest.raises(Overloaded, match="engine overloaded"):
        await wrapped("hello")
    assert callinfo.current_call.get() is None
    run = recorder.stop()

    call = run.llm_calls.iloc[0]
    assert call["outcome"] == "Overloaded"
    assert call["kind"] == "other"
    assert "engine overloaded" in call["error"]
    assert call["service_ns"] > 0
    assert run.summary()["llm_calls_failed"] == 1


# --------------------------------------------------------------------------- simulated note


def test_simulated_runs_say_so(runs):
    from ragopt.ui.plots import slot_occupancy

    run = runs["rag_folder"]
    assert run.simulated is True
    assert run.summary()["simulated_llm"] is True
    assert "SIMULATED" in run.meta["backend"]
    assert "simulated" in slot_occupancy([run]).layout.title.text

    not_simulated = Run(**{**run.__dict__, "meta": {**run.meta, "simulated": False}})
    assert "simulated" not in slot_occupancy([not_simulated]).layout.title.text


# --------------------------------------------------------------------------- a real endpoint


def test_the_http_simulator_is_labelled_simulated_and_reports_its_plan(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    (folder / "alpha.txt").write_text(ALPHA, encoding="utf-8")

    with SimulatorServer(LLMSimulator(SimulatorConfig.preset("fast"))) as server:
        config = RagoptConfig(llm_base_url=server.url + "/v1", llm_api_key="sim", sim_preset="fast")
        backends = make_backends(config)  # configured like a real endpoint; /v1/models says what it is
        assert backends.simulator is None and backends.simulated
        assert "SIMULATED" in backends.description and server.url in backends.description
        run = profile("rag_folder", folder, config, working_dir=tmp_path / "wd", backends=backends)
        served = server.sim.counters()

    assert run.docs["status"].tolist() == ["ok"]
    assert run.meta["simulator"] is None and run.simulated is True
    assert run.meta["config"]["llm_api_key"] == "***"
    summary = run.summary()
    assert summary["simulated_llm"] is True
    assert summary["llm_calls"] == served["calls"] > 0
    assert summary["llm_calls_failed"] == 0
    # The engine's numbers came back in each response's usage: kinds, tokens and the plan.
    assert summary["llm_calls_by_kind"] == served["calls_by_kind"]
    assert int(run.llm_calls["prompt_tokens"].sum()) == served["prompt_tokens"]
    assert summary["llm_bound_limit_source"] == "simulator plan"
    assert int(run.llm_calls["planned_ns"].sum()) == served["planned_ns"]


def test_an_endpoint_that_is_not_the_simulator_is_not_labelled_simulated(tmp_path):
    from aiohttp import web

    from ragopt.backends.openai_endpoint import served_by_simulator

    async def models(request):
        return web.json_response({"object": "list", "data": [{"id": "qwen2.5:7b", "owned_by": "library"}]})

    async def serve():
        app = web.Application()
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await asyncio.to_thread(served_by_simulator, f"http://127.0.0.1:{port}/v1", None)
        finally:
            await runner.cleanup()

    assert asyncio.run(serve()) is False
    assert served_by_simulator("http://127.0.0.1:9/v1", None) is False  # nothing listening
