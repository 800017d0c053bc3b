"""The token and cost ledger: its totals are the simulator's own, its costs are the price table's, hits are savings."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ragopt.measure.ledger import NO_PRICE, SHARED, Ledger, ModelPrice, Prices
from ragopt.measure.run import CACHE_HIT_COLUMNS, EMBEDDING_COLUMNS, LLM_COLUMNS, Run, run_frames

ROOT = Path(__file__).resolve().parents[2]
PRICES = Prices(
    models={"llm-a": ModelPrice(input=2.0, output=8.0, cached_input=0.5), "vision-b": ModelPrice(input=3.0, output=12.0)},
    embeddings={"embed-c": 0.1},
)


def _call(kind, prompt, completion, outcome="ok", cached=None, doc_id=None, file=None):
    row = {column: None for column in LLM_COLUMNS}
    row.update(start_s=0.0, end_s=1.0, latency_s=1.0, service_ns=10**9, queue_wait_ns=0, planned_ns=10**9, answer_wait_ns=0,
               granted_s=0.0, released_s=1.0, kind=kind,
               outcome=outcome, prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached,
               token_source="usage", doc_id=doc_id, file=file)
    return row


def hand_built_run(models=("llm-a", "vision-b")) -> Run:
    """Two documents, every kind of row the ledger prices: a refused attempt, cached input, a vision call, a merge summary."""
    calls = pd.DataFrame([
        _call("extract", 1000, 200, doc_id="doc-1"),
        _call("extract", 1000, 0, outcome="429", doc_id="doc-1"),  # refused at the door: not billed
        _call("glean", 1500, 100, cached=1000, doc_id="doc-1"),
        _call("image", 700, 50, doc_id="doc-2", file="b.docx"),
        _call("summary", 400, 80),
    ], columns=list(LLM_COLUMNS))
    embeddings = pd.DataFrame([[0.0, 1.0, 1.0, 3, 2000], [1.0, 2.0, 1.0, 2, 1000]], columns=EMBEDDING_COLUMNS)
    hits = pd.DataFrame([[1.5, "extract", 900, 150, "tokenizer", "doc-2", None, None]], columns=CACHE_HIT_COLUMNS)
    frames = run_frames([], [], [], [])  # empty tables with the Run's columns
    docs = pd.DataFrame([{"file": "a.txt", "doc_id": "doc-1", "status": "ok"}, {"file": "b.docx", "doc_id": "doc-2", "status": "ok"}],
                        columns=frames["docs"].columns)
    resources = pd.DataFrame(columns=["t_s", "rss_mb", "children_rss_mb", "total_rss_mb", "cpu_pct", "tree_cpu_s"])
    return Run(meta={"config": {"llm_model": models[0], "vision_model": models[1]}, "simulated": False, "wall_s": 2.0}, docs=docs,
               llm_calls=calls, embedding_calls=embeddings, flushes=frames["flushes"], events=frames["events"],
               resources=resources, llm_cache_hits=hits)


def test_costs_follow_the_price_table_exactly():
    ledger = Ledger.of(hand_built_run(), PRICES, embedding_model="embed-c")
    per_million = 1e-6
    extract = (1000 * 2.0 + 200 * 8.0) * per_million
    glean = (500 * 2.0 + 1000 * 0.5 + 100 * 8.0) * per_million  # 1,000 of its 1,500 prompt tokens were cached
    image = (700 * 3.0 + 50 * 12.0) * per_million  # the vision model's price
    summary = (400 * 2.0 + 80 * 8.0) * per_million
    embedding = 3000 * 0.1 * per_million
    by_kind = ledger.by_kind().set_index("kind")
    assert by_kind.loc["extract", "cost"] == pytest.approx(extract, rel=1e-12)
    assert by_kind.loc["extract", "calls"] == 2 and by_kind.loc["extract", "billed_calls"] == 1
    assert by_kind.loc["extract", "prompt_tokens"] == 2000  # the refused attempt's tokens stay in the token totals
    assert by_kind.loc["glean", "cost"] == pytest.approx(glean, rel=1e-12)
    assert by_kind.loc["image", "cost"] == pytest.approx(image, rel=1e-12)
    assert by_kind.loc["summary", "cost"] == pytest.approx(summary, rel=1e-12)
    # The cache hit cost nothing and saved what the extraction would have cost.
    assert by_kind.loc["extract", "cache_hits"] == 1 and by_kind.loc["extract", "saved_tokens"] == 1050
    assert by_kind.loc["extract", "saved_cost"] == pytest.approx((900 * 2.0 + 150 * 8.0) * per_million, rel=1e-12)
    totals = ledger.totals()
    assert totals["llm_cost"] == pytest.approx(extract + glean + image + summary, rel=1e-12)
    assert totals["embedding_cost"] == pytest.approx(embedding, rel=1e-12)
    assert totals["cost"] == pytest.approx(extract + glean + image + summary + embedding, rel=1e-12)
    assert (totals["prompt_tokens"], totals["completion_tokens"], totals["embedding_tokens"]) == (4600, 430, 3000)
    by_document = ledger.by_document().set_index("document")
    assert by_document.loc["a.txt", "cost"] == pytest.approx(extract + glean, rel=1e-12)  # doc-1, named by its file
    assert by_document.loc["b.docx", "cost"] == pytest.approx(image, rel=1e-12)
    assert by_document.loc[SHARED, "cost"] == pytest.approx(summary, rel=1e-12)
    by_stage = ledger.by_stage().set_index("stage")
    assert by_stage.loc["extract", "cost"] == pytest.approx(extract + glean, rel=1e-12)
    assert by_stage.loc["embed", "cost"] == pytest.approx(embedding, rel=1e-12)


def test_a_model_without_a_price_shows_no_price_never_zero():
    ledger = Ledger.of(hand_built_run(models=("llm-a", "unpriced-vision")), PRICES, embedding_model="embed-c")
    by_kind = ledger.by_kind().set_index("kind")
    assert math.isnan(by_kind.loc["image", "cost"])
    assert by_kind.loc["extract", "cost"] > 0
    totals = ledger.totals()
    assert totals["llm_cost"] is None and totals["cost"] is None
    assert math.isnan(ledger.by_document().set_index("document").loc["b.docx", "cost"])
    text = ledger.text()
    assert NO_PRICE in text and "image" in text
    assert Ledger.of(hand_built_run(), Prices()).totals()["cost"] is None  # an empty table prices nothing


def test_price_tables_load_from_toml_and_yaml(tmp_path):
    example = Prices.load(ROOT / "examples" / "prices.toml")
    assert example.currency == "USD" and example.models and "all-MiniLM-L6-v2" in example.embeddings
    yaml_file = tmp_path / "prices.yaml"
    yaml_file.write_text("currency: EUR\nmodels:\n  llm-a: {input: 2, output: 8, cached_input: 0.5}\nembeddings:\n  embed-c: {input: 0.1}\n")
    loaded = Prices.load(yaml_file)
    assert loaded.currency == "EUR"
    assert loaded.models["llm-a"] == PRICES.models["llm-a"] and loaded.embeddings == PRICES.embeddings


def test_the_run_record_carries_the_ledger_and_old_records_still_load(tmp_path):
    run = hand_built_run()
    path = run.to_json(tmp_path / "run.json")
    import json

    record = json.loads(path.read_text())
    assert record["ledger"]["totals"]["prompt_tokens"] == 4600
    del record["llm_cache_hits"]  # a record from before the ledger
    record["llm_calls"]["columns"] = record["llm_calls"]["columns"][:15]
    record["llm_calls"]["data"] = [row[:15] for row in record["llm_calls"]["data"]]
    path.write_text(json.dumps(record))
    old = Run.from_json(path)
    assert old.llm_cache_hits.empty and old.llm_calls["doc_id"].isna().all()
    assert old.ledger(PRICES).totals()["prompt_tokens"] == 4600


@pytest.mark.slow
def test_ledger_totals_equal_the_simulators_own_counters(tmp_path):
    """A real profiled run with refused attempts: the ledger's tokens are the simulator's, every extraction has its document."""
    from ragopt.config import RagoptConfig
    from ragopt.measure.experiments import profile
    from ragopt.measure.workloads import synthetic_corpus

    corpus = tmp_path / "corpus"
    synthetic_corpus(corpus, 7, paragraphs_per_doc=1)
    run = profile("ragopt", corpus, RagoptConfig(sim_preset="fast", sim_rate_429=0.2, enable_parse_cache=False),
                  working_dir=tmp_path / "work")
    counters = run.meta["simulator"]
    totals = run.ledger(PRICES).totals()
    assert totals["llm_calls"] == counters["calls"]
    assert totals["prompt_tokens"] == counters["prompt_tokens"]
    assert totals["completion_tokens"] == counters["completion_tokens"]
    assert totals["billed_calls"] == counters["calls_by_outcome"]["ok"] < counters["calls"]  # some were refused
    assert totals["token_sources"] == {"simulator": counters["calls"]}
    # Each extraction and multimodal call names its document; the documents are the run's own.
    calls = run.llm_calls
    named = calls[calls["kind"].isin(["extract", "glean", "image", "table"])]
    assert named["doc_id"].notna().all()
    assert set(named["doc_id"]) == set(run.docs["doc_id"])
    assert totals["embedding_tokens"] > 0 and (run.embedding_calls["tokens"] > 0).all()
    by_document = run.ledger(PRICES).by_document()
    assert set(by_document["document"]) <= set(run.docs["file"]) | {SHARED}


@pytest.mark.slow
def test_llm_cache_hits_are_counted_as_saved_tokens(tmp_path):
    """The same text ingested again under another name is answered by LightRAG's LLM cache: zero-cost calls, saved tokens."""
    from ragopt.config import RagoptConfig
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.recorder import Recorder

    text = "Ada Okafor of Northwind Labs presented new results on solid-state batteries at a workshop in Lisbon.\n"
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text(text + "\n")  # other bytes, so another document; the same chunk text
    config = RagoptConfig(sim_preset="fast", enable_parse_cache=False)
    recorder = Recorder(slots=8)
    rag = build_rag(config, tmp_path / "work", recorder=recorder, optimized=True)
    recorder.start()
    ingest(rag, [tmp_path / "a.txt"], config=config, progress=False)
    ingest(rag, [tmp_path / "b.txt"], config=config, progress=False)
    run = recorder.stop()
    release_rag(rag)
    hits = run.llm_cache_hits
    assert set(hits["kind"]) == {"extract", "glean"} and len(hits) == 2
    assert len(run.llm_calls) == 2  # only the first document's text reached the model
    first = run.llm_calls.set_index("kind")
    for kind in ("extract", "glean"):
        saved = hits.set_index("kind").loc[kind]
        # Counted by the tokenizer on the cached prompt (system prompt and history joined in): close to the call's own.
        assert saved["prompt_tokens"] == pytest.approx(first.loc[kind, "prompt_tokens"], rel=0.05)
        assert saved["completion_tokens"] == first.loc[kind, "completion_tokens"]
    ledger = Ledger.of(run, Prices(models={"llm-a": ModelPrice(1.0, 4.0)}), llm_model="llm-a")  # a bare Recorder names no model
    totals = ledger.totals()
    assert totals["cache_hits"] == 2
    assert totals["saved_tokens"] == int(hits["prompt_tokens"].sum() + hits["completion_tokens"].sum())
    assert totals["saved_cost"] == pytest.approx((hits["prompt_tokens"].sum() * 1.0 + hits["completion_tokens"].sum() * 4.0) / 1e6)
    assert hits.loc[hits["kind"] == "extract", "doc_id"].notna().all()  # the chunk names its document
