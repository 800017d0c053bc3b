"""The capacity planner: its sample, its estimators, and real plans of small corpora on the fast simulator preset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from ragopt.measure.estimators import power_law_total, regression_total
from ragopt.measure.ledger import ModelPrice, Prices
from ragopt.measure.plan_pace import STAGES
from ragopt.measure.run import Run
from ragopt.measure.sampling import sample_size, strata, stratified_sample

PRICES = Prices(models={"gpt-4o-mini": ModelPrice(input=1.0, output=4.0)}, embeddings={"all-MiniLM-L6-v2": 0.01})


def fake_scan(formats: dict) -> pd.DataFrame:
    rows = []
    for fmt, count in formats.items():
        for i in range(count):
            rows.append({"file": f"{fmt}_{i:03d}.{fmt}", "format": fmt, "text_tokens": 100 + 37 * i, "error": None})
    return pd.DataFrame(rows)


def test_sample_size_is_a_tenth_or_at_least_ten_documents():
    assert sample_size(200) == 20
    assert sample_size(50) == 10
    assert sample_size(7) == 7
    assert sample_size(200, requested=5) == 5
    assert sample_size(3, requested=50) == 3


def test_stratified_sample_holds_every_format_and_size_class_in_proportion():
    scan = fake_scan({"txt": 60, "md": 25, "docx": 15})
    sample = stratified_sample(scan, seed=1)
    assert len(sample) == 10 and len(set(sample)) == 10
    chosen = scan[scan["file"].isin(sample)]
    assert set(chosen["format"]) == {"txt", "md", "docx"}
    counts = chosen["format"].value_counts()
    assert counts["txt"] > counts["md"] >= counts["docx"] >= 1
    assert set(strata(scan)[scan["file"].isin(sample)].str.split("/").str[1]) == {"small", "medium", "large"}
    assert stratified_sample(scan, seed=1) == sample  # same seed, same sample
    assert stratified_sample(scan, seed=2) != sample
    # Strata of about one document's share each: the floor of one is their share, no stratum gets a second
    # while another is further below its own (it did: 5 DOCX of 20 for 28 of 200, where 3 is the share).
    mixed = fake_scan({"txt": 137, "md": 35, "docx": 28})
    mixed["text_tokens"] = [100 * (i % 3) + i / 1000 for i in range(len(mixed))]  # every format in every size class
    drawn = mixed[mixed["file"].isin(stratified_sample(mixed))]["format"].value_counts()
    assert len(drawn.index) == 3 and abs(drawn["docx"] - 2.8) < 1 and abs(drawn["md"] - 3.5) < 1
    failed = scan.assign(error=["parse error"] * 5 + [None] * 95)
    assert not set(stratified_sample(failed, n=100)) & set(failed["file"][:5])  # unparsable files are never sampled


def test_regression_total_is_exact_for_an_exact_linear_rule():
    x = np.array([[1, 2], [2, 1], [3, 5], [1, 1], [4, 2]], dtype=float)
    y = x @ np.array([2.0, 3.0])
    rest = np.array([10.0, 20.0])
    estimate = regression_total(y, x, rest, n_rest=8, how="test")
    assert estimate.value == pytest.approx(y.sum() + 2 * 10 + 3 * 20)
    assert estimate.lo == pytest.approx(estimate.value) and estimate.hi == pytest.approx(estimate.value)


def test_regression_total_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered, trials = 0, 300
    for _ in range(trials):
        units = rng.integers(1, 6, size=(60, 1)).astype(float)
        y = 3.0 * units[:, 0] + rng.normal(0, 1.0, size=60)
        sample = rng.choice(60, size=10, replace=False)
        rest = np.setdiff1d(np.arange(60), sample)
        estimate = regression_total(y[sample], units[sample], units[rest].sum(axis=0), len(rest), "test")
        covered += estimate.lo <= y.sum() <= estimate.hi
    assert 0.88 <= covered / trials <= 0.99


def test_power_law_total_extrapolates_a_power_law():
    x = np.array([1.0, 2, 4, 8, 16])
    estimate = power_law_total(x, 3 * x**1.5, 100.0, "test")
    assert estimate.value == pytest.approx(3 * 100**1.5)
    assert "1.50" in estimate.how
    with pytest.raises(ValueError):
        power_law_total(x, np.array([0, 0, 0, 1.0, 2.0]), 100.0, "test")


def test_a_lumpy_growth_curve_is_extended_by_its_end_point_not_a_power_law():
    from ragopt.measure.growth import growth_total

    x = np.array([1.0, 2, 3, 4, 6, 8, 10, 13, 16, 19])
    smooth = growth_total(x, 20 * x, 38.0, "texts")
    assert smooth.value == pytest.approx(760.0) and "power law" in smooth.how
    # Two large batches, as ragopt's micro-batched embeddings make: the curve's shape is their timing.
    lumpy = growth_total(x, np.array([2.0, 2, 2, 2, 442, 442, 442, 442, 442, 442]), 38.0, "texts")
    assert lumpy.value == pytest.approx(442 * 2) and "lumpy" in lumpy.how


def test_merge_summaries_follow_lightrags_rule_on_the_samples_key_counts():
    from ragopt.measure.merge_growth import MergeGrowth, document_keys, merge_piles
    from ragopt.measure.run import LLM_COLUMNS

    # A key's fragments pile up document by document; a pile of T = 8 is summarized into one.
    counts = np.array([[4.0, 8, 1, 0], [4, 7, 0, 2]])  # two documents, four keys
    growth = MergeGrowth(counts, units=np.array([5.0, 5.0]), measured=3.0, curve=(np.array([5.0, 10.0]), np.array([1.0, 3.0])),
                         threshold=8)
    assert growth.summaries(10.0, 2).value == 3.0  # the sample's own scale: what its run measured
    assert growth.summaries(5.0, 1).value == 1.0  # half way along the sample's run
    larger = growth.summaries(40.0, 8)
    assert larger.value > 3.0 and not larger.has_interval  # two documents: no jackknife
    four = MergeGrowth(np.vstack([counts, counts]), units=np.full(4, 5.0), measured=6.0,
                       curve=(np.array([5.0, 20.0]), np.array([1.0, 6.0])), threshold=8)
    wider = four.summaries(80.0, 16)
    assert wider.value > 6.0 and wider.lo <= wider.value <= wider.hi
    # One merge of 20 fragments is one summary (counted one by one they would be two); 3 a merge: 3, 6, 9 -> 1,
    # 4, 7, 10 -> 1, 4: two summaries in 7 merges.
    assert merge_piles(np.array([20.0, 3.0]), np.array([[1, 1], [3, 7]]), 8)[1].tolist() == [[1, 1], [1, 2]]
    # A chunk's extraction and gleaning add one fragment per key between them.
    rows = [dict.fromkeys(LLM_COLUMNS) | {"kind": kind, "doc_id": "d1", "chunk": chunk, "graph_keys": keys}
            for kind, chunk, keys in (("extract", "c1", ["A", "B"]), ("glean", "c1", ["B", "C"]), ("extract", "c2", ["A"]))]
    run = type("R", (), {"llm_calls": pd.DataFrame(rows, columns=list(LLM_COLUMNS))})()
    assert document_keys(run, {"d1": "a.txt"}) == {"a.txt": {"A": 2, "B": 1, "C": 1}}


def zipf_corpus(n_docs: int = 400, n_keys: int = 4000, seed: int = 7) -> np.ndarray:
    """documents x keys: how many chunks of each document name each key; a few keys recur everywhere, most are rare."""
    rng = np.random.default_rng(seed)
    frequency = 1.0 / np.arange(1, n_keys + 1) ** 1.1
    counts = np.zeros((n_docs, n_keys))
    for row in counts:
        np.add.at(row, rng.choice(n_keys, size=rng.integers(10, 30), p=frequency / frequency.sum()), 1)
    return counts


def piled(counts: np.ndarray, threshold: int = 8) -> tuple:
    """(fragments held after each merge, summed; summaries made): the corpus ingested document by document."""
    pile, total, summaries = np.zeros(counts.shape[1]), 0.0, 0
    for row in counts:
        named = row > 0
        pile[named] += row[named]
        full = named & (pile >= threshold)
        summaries += int(full.sum())
        pile[full] = 1.0
        total += pile[named].sum()
    return total, summaries


def test_merge_summaries_of_a_corpus_come_from_document_occurrence_not_scaled_sample_counts():
    """Keys a 10% sample saw once are mostly rare keys, not frequent ones: scaling their counts by 10 overshoots."""
    from ragopt.measure.merge_growth import corpus_summaries, deconvolve, merge_piles

    counts = zipf_corpus()
    n_docs = len(counts)
    truth = piled(counts)[1]
    for seed in range(5):
        sample = counts[np.random.default_rng(seed).choice(n_docs, 40, replace=False)]
        predicted = corpus_summaries(deconvolve((sample > 0).sum(axis=0), sample.sum(axis=0), 40, n_docs), 8)
        docs = (sample > 0).sum(axis=0)
        seen = docs > 0  # each seen key in 10x its sampled documents, at its chunks per document there
        scaled = merge_piles(sample.sum(axis=0)[seen] / docs[seen], docs[seen, None] * n_docs // 40, 8)[1].sum()
        assert predicted == pytest.approx(truth, rel=0.15)  # measured: -2% to -12% over these five samples
        assert scaled > 1.2 * truth  # measured: +23% to +36%
    # A sample that is the whole corpus: the rule on its own keys, each at its mean chunks per document (660 of 703).
    assert corpus_summaries(deconvolve((counts > 0).sum(axis=0), counts.sum(axis=0), n_docs, n_docs), 8) == pytest.approx(truth, rel=0.08)


def test_a_corpus_of_larger_documents_than_its_sample_counts_as_more_of_the_samples_documents():
    """The dev corpus's stratified sample held 88 of its 597 chunks in 10 of 38 documents: keys recur with the text."""
    from ragopt.measure.merge_growth import MergeGrowth

    counts = zipf_corpus()
    sample = counts[np.random.default_rng(0).choice(len(counts), 40, replace=False)]
    growth = MergeGrowth(sample, np.ones(40), measured=float(piled(sample)[1]), curve=(np.array([40.0]), np.array([0.0])),
                         threshold=8)
    # The same 400 chunks in 100 documents of 4 chunks each predict what 400 documents of the sample's size do.
    assert growth.summaries(400.0, 100).value == pytest.approx(growth.summaries(400.0, 400).value)
    assert growth.summaries(800.0, 400).value > 1.5 * growth.summaries(400.0, 400).value
    # The sample run made half the summaries the rule gives its keys: so does the prediction.
    half = MergeGrowth(sample, np.ones(40), measured=growth.measured / 2, curve=growth.curve, threshold=8)
    assert half.summaries(400.0, 400).value == pytest.approx(growth.summaries(400.0, 400).value / 2)


def test_merge_work_grows_as_recurring_keys_piles_do():
    """Each merge re-embeds its key with the fragments piled since the last summary; the model follows that growth."""
    from ragopt.measure.merge_growth import MergeGrowth, merge_piles

    # One fragment a merge: piles 1..7, the 8th makes 8 -> summarized into 1, then 2; three a merge: 3, 6, 9 -> 1, 4, 7.
    assert merge_piles(np.array([1.0, 3.0]), np.array([[1, 7, 8, 9], [1, 2, 3, 5]]), 8)[0].tolist() == [[1, 28, 29, 31], [3, 9, 10, 21]]

    counts = zipf_corpus()
    sample = counts[np.random.default_rng(0).choice(len(counts), 40, replace=False)]
    units = np.ones(40)
    growth = MergeGrowth(sample, units, measured=0.0, curve=(np.array([40.0]), np.array([0.0])), threshold=8)
    ratio = growth.work_ratio(float(len(counts)), len(counts))
    assert ratio.value == pytest.approx(piled(counts)[0] / piled(sample)[0], rel=0.10)
    assert ratio.value > 1.2 * len(counts) / 40 and ratio.lo <= ratio.value <= ratio.hi  # faster than the chunks
    # Keys that never recur pile nothing up: the merge work grows as the chunks do.
    once = np.eye(40)
    assert MergeGrowth(once, units, 0.0, (np.array([40.0]), np.array([0.0])), 8).work_ratio(400.0, 400).value == pytest.approx(10.0)


def test_a_stage_the_sample_kept_busy_keeps_its_pace_and_the_others_run_at_nominal_capacity():
    from ragopt.measure.estimators import exact
    from ragopt.measure.plan_pace import fit_mode
    from ragopt.measure.plan_prediction import cpu_work
    from ragopt.measure.run import LLM_COLUMNS, Run, run_frames

    t = np.arange(0.0, 10.5, 0.5)
    cpu = np.where(t < 2, 0.5 * t, 1.0 + 1.9 * (t - 2))  # a slow start, then 1.9 of 2 cores busy
    calls = [dict.fromkeys(LLM_COLUMNS) | {"start_s": float(i), "end_s": i + 1.0, "service_ns": 10**9, "planned_ns": 10**9,
                                            "queue_wait_ns": 0, "answer_wait_ns": 0, "granted_s": float(i), "released_s": i + 1.0,
                                            "kind": "extract"} for i in range(10)]  # one slot of 8 in use
    run = Run(meta={"mode": "ragopt", "slots": 8, "wall_s": 10.0}, resources=pd.DataFrame({"t_s": t, "tree_cpu_s": cpu}),
              **run_frames(calls, [], [], []))
    fit = fit_mode(run, sample_parse_s=4.0, parse_workers=2, cores=2)
    assert fit.bound == "CPU" and fit.paced == ("CPU",) and fit.cpu_s == pytest.approx(16.2)
    assert fit.capacity("CPU", slots=8, parse_workers=2, scales_with_slots=True)[0] == pytest.approx(1.9)  # the steady half
    assert fit.capacity("LLM slots", slots=16, parse_workers=2, scales_with_slots=True)[0] == 16  # room to spare: nominal
    assert fit.overhead_s == pytest.approx(10.0 - 16.2 / 1.9)  # the slow start, paid once
    # The corpus's CPU work: its own parsing (the scan's) + the sample's other CPU grown with the merge work.
    assert cpu_work(fit, parse_s=12.0, merge_work=exact(3.0, "x3")).value == pytest.approx(12.0 + (16.2 - 4.0) * 3)
    # Nothing busy (a mode that waits on its own documents one by one): every stage keeps the pace it showed.
    idle = Run(meta={"mode": "rag_folder", "slots": 8, "wall_s": 10.0}, resources=pd.DataFrame({"t_s": t, "tree_cpu_s": 0.5 * t}),
               **run_frames(calls, [], [], []))
    slow = fit_mode(idle, sample_parse_s=1.0, parse_workers=2, cores=2)
    assert set(slow.paced) == {"CPU", "LLM slots"}
    assert slow.capacity("CPU", slots=8, parse_workers=2, scales_with_slots=False)[0] == pytest.approx(0.5)
    assert slow.capacity("LLM slots", slots=8, parse_workers=2, scales_with_slots=False)[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------- real plans


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    """A plan of three documents (text; Markdown with a table; DOCX with a table and an image), both sample runs."""
    from ragopt.cache.content_cache import ContentCache
    from ragopt.config import RagoptConfig
    from ragopt.measure.planner import plan
    from ragopt.measure.workloads import synthetic_corpus

    root = tmp_path_factory.mktemp("plan")
    generated = synthetic_corpus(root / "generated", 7, paragraphs_per_doc=1)
    corpus = root / "corpus"
    corpus.mkdir()
    for path in (generated[0], generated[4], generated[6]):
        shutil.copyfile(path, corpus / path.name)
    cache = ContentCache(root / "parse-cache")
    config = RagoptConfig(sim_preset="fast", enable_parse_cache=True)
    planned = plan(corpus, config, cache=cache, prices=PRICES, work_dir=root / "work")
    return {"plan": planned, "corpus": corpus, "cache": cache, "config": config, "root": root}


@pytest.mark.slow
def test_a_plan_of_three_documents_completes_and_reproduces_its_own_sample(small_plan):
    planned = small_plan["plan"]
    prediction = planned.prediction
    assert len(planned.scan) == 3 and len(planned.sample) == 3  # fewer than 10 documents: all of them
    assert set(planned.runs) == {"ragopt", "rag_folder"}
    for run in planned.runs.values():
        assert run.summary()["docs_ok"] == 3 and run.simulated
    assert set(planned.scan["format"]) == {"txt", "md", "docx"}
    assert planned.scan[["tables", "images"]].sum().to_dict() == {"tables": 2, "images": 1}
    # The corpus is its sample: calls and tokens are what the ragopt run measured.
    measured = planned.runs["ragopt"].llm_calls
    assert prediction.total("calls").value == len(measured)
    assert prediction.total("prompt_tokens").value == measured["prompt_tokens"].sum()
    assert prediction.total("completion_tokens").value == measured["completion_tokens"].sum()
    assert prediction.calls["extract"].value == planned.scan["text_chunks"].sum() + planned.scan["modal_items"].sum()
    assert prediction.cost["total"] is not None and prediction.cost["total"].value > 0
    for mode in prediction.modes.values():
        assert mode.wall.value > 0 and mode.wall.has_interval and mode.bound in STAGES
    record = json.loads(json.dumps(planned.to_dict(), default=str))
    assert record["figures"] == "prediction" and record["simulated_llm"] is True
    text = planned.text()
    assert "PREDICTION" in text and "SIMULATED" in text


@pytest.mark.slow
def test_predicted_wall_time_never_rises_with_more_slots_or_parse_workers(small_plan):
    table = small_plan["plan"].what_if(slots=[1, 2, 8, 32], parse_workers=[1, 2, 8])
    assert (table["figures"] == "prediction").all()
    for _, by_slots in table.groupby("parse_workers"):
        assert by_slots.sort_values("slots")["wall_s"].is_monotonic_decreasing
    for _, by_workers in table.groupby("slots"):
        assert by_workers.sort_values("parse_workers")["wall_s"].is_monotonic_decreasing
    # A slower endpoint: the same calls, each served in ttft + completion tokens x tpot of the hosted preset.
    planned = small_plan["plan"]
    hosted = planned.predict(slots=1, latency="hosted")
    calls, completion = hosted.total("calls").value, hosted.total("completion_tokens").value
    assert hosted.service_s.value == pytest.approx((0.8 * calls + 0.020 * completion) * (1 + planned.model.failed_share))
    assert hosted.modes["ragopt"].stages["LLM slots"].value >= hosted.service_s.value  # one slot serves one call at a time
    assert hosted.modes["ragopt"].wall.value >= planned.predict(slots=1).modes["ragopt"].wall.value


@pytest.mark.slow
def test_predictions_for_n_and_2n_documents_scale_as_they_should(small_plan, tmp_path):
    """Extraction and gleaning calls and tokens of 2N documents are within 10% of twice those of N."""
    from ragopt.aio import run_sync
    from ragopt.cache.content_cache import ContentCache
    from ragopt.measure.corpus_scan import ascan
    from ragopt.measure.workloads import synthetic_corpus

    model = small_plan["plan"].model
    predictions = {}
    for n in (14, 28):
        files = synthetic_corpus(tmp_path / f"n{n}", n, seed=1, paragraphs_per_doc=1)
        scan = run_sync(ascan(files, small_plan["config"], cache=ContentCache(None), output_dir=tmp_path / f"scan{n}"))
        predictions[n] = model.predict(scan)
    for kind in ("extract", "glean"):
        for what in ("calls", "prompt_tokens", "completion_tokens"):
            ratio = getattr(predictions[28], what)[kind].value / getattr(predictions[14], what)[kind].value
            assert ratio == pytest.approx(2.0, rel=0.10), (kind, what)


@pytest.mark.slow
def test_the_scan_parses_through_the_cache_a_later_ingest_reuses(small_plan):
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.workloads import corpus_files

    assert not small_plan["plan"].scan["cache_hit"].any()  # the scan parsed each file once
    rag = build_rag(small_plan["config"], small_plan["root"] / "ingest", optimized=True)
    try:
        result = ingest(rag, corpus_files(small_plan["corpus"]), config=small_plan["config"], cache=small_plan["cache"],
                        progress=False)
    finally:
        release_rag(rag)
    assert result.cache_stats["hits"] == 3 and result.cache_stats["misses"] == 0


@pytest.mark.slow
def test_the_benchmark_shows_a_mode_not_run_on_the_whole_corpus_as_predicted_only(small_plan):
    """``ragopt bench --plan --measure ragopt``: RAG-Anything's wall is predicted, with nothing measured beside it."""
    from ragopt.measure.bench.plan import compare

    planned = small_plan["plan"]
    table = compare(planned.prediction, {"ragopt": planned.runs["ragopt"]}).set_index("metric")
    walls = table[table.index.str.startswith("wall s")]
    assert len(walls) == 2
    ours = walls.loc[walls.index.str.contains("ragopt")].iloc[0]
    assert ours["measured"] == planned.runs["ragopt"].meta["wall_s"] and ours["error"] >= 0
    shipped = walls.loc[walls.index.str.contains("shipped")].iloc[0]
    assert shipped["predicted"] == planned.prediction.modes["rag_folder"].wall.value
    assert pd.isna(shipped["measured"]) and pd.isna(shipped["error"]) and pd.isna(shipped["in_interval"])


def test_a_whole_corpus_run_may_take_three_times_its_predicted_upper_end_and_at_least_an_hour():
    from ragopt.measure.bench.plan import run_limit_s
    from ragopt.measure.estimators import Estimate

    assert run_limit_s(Estimate(4664.0, 3661.0, 6223.0, "dev at hosted")) == pytest.approx(3 * 6223.0)
    assert run_limit_s(Estimate(2000.0, None, None, "no interval")) == pytest.approx(6000.0)
    assert run_limit_s(Estimate(200.0, 150.0, 300.0, "small")) == 3600.0
    assert run_limit_s(None) == 3600.0


@pytest.mark.slow
def test_the_benchmarks_whole_corpus_run_starts_from_an_empty_knowledge_base(small_plan, tmp_path):
    """A knowledge base left in the run's folder (an interrupted run's) would be resumed, its documents skipped:
    the benchmark's measured run ingests every document afresh."""
    from ragopt.measure.bench.plan import measure_whole

    left = tmp_path / "ragopt"
    shutil.copytree(small_plan["plan"].work_dir / "runs" / "ragopt", left)  # all three documents already ingested
    config = small_plan["config"].replace(cache_storage=None)  # as the benchmark runs it: parsing afresh
    run = measure_whole("ragopt", small_plan["corpus"], tmp_path / "ragopt.json", config, left,
                        small_plan["plan"].prediction.modes["ragopt"].wall)
    assert run.docs["status"].tolist() == ["ok"] * 3
    assert len(run.llm_calls[run.llm_calls["kind"] == "extract"]) == small_plan["plan"].prediction.calls["extract"].value


@pytest.mark.slow
def test_the_benchmark_measures_the_machines_drift_by_ingesting_the_sample_again(small_plan, tmp_path):
    from ragopt.measure.bench.plan import machine_drift

    planned = small_plan["plan"]
    config = small_plan["config"].replace(cache_storage=None)
    drift = machine_drift(planned, config, tmp_path, reuse=False)
    again = Run.from_json(tmp_path / "sample-again.json")
    assert again.docs["status"].tolist() == ["ok"] * 3  # the whole sample, ingested afresh
    assert drift == pytest.approx(again.meta["wall_s"] / planned.runs["ragopt"].meta["wall_s"])
    written = (tmp_path / "sample-again.json").stat().st_mtime_ns
    assert machine_drift(planned, config, tmp_path, reuse=True) == drift  # --reuse reads the record, runs nothing
    assert (tmp_path / "sample-again.json").stat().st_mtime_ns == written
