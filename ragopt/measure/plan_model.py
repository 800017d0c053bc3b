"""The planner's model: fitted on a sample's ledgers, it predicts a whole corpus's calls, tokens, cost and wall time.

What it fits (``fit``), from a sample ingested with the chosen backends
(``ragopt``) and with RAG-Anything as shipped (``rag_folder``):

- per prompt kind, calls and prompt/completion tokens per document as a
  non-negative linear function of the document's units from the scan (text
  chunks, chunk tokens, modal chunks for extraction and gleaning; image,
  table, equation blocks for theirs), by the regression estimator of
  ``ragopt.measure.estimators`` (interval: the fit's prediction interval);
- merge summaries as the graph grows, by LightRAG's summary rule on the
  corpus's key occurrence deconvolved from the sample's, and the merge work
  (description fragments re-embedded) that grows with it (``merge_growth``);
- embedding texts by the chunks and tokens by the merge work (summaries
  where the answers name no graph keys: the sample run's own growth curve,
  ``growth``);
- the latency of a call: service seconds = ttft + completion tokens x tpot,
  least squares over the sample's calls (the simulator's plan, or the
  endpoint's measured busy time), plus failed attempts' share;
- per mode, how its wall time went (``plan_pace``): each stage's steady pace,
  which stages were busy (they keep that pace), and the overhead outside them;
- the CPU seconds of the whole process tree on this machine (parsing, and the
  rest, which grows with the merge work).

Prediction (``PlanModel.predict``): calls and tokens by kind, their cost, the
LLM service seconds and LLM-bound limit (service / K), and per mode the wall
time = overhead + the longest of its stages, each stage's work over its
capacity (``ModeFit.capacity``: the stages the sample kept busy at their
measured pace, the others at nominal): LLM service seconds, the scan's
parse seconds, CPU seconds, and embedding tokens where the embedder is not
this CPU. More slots raise ragopt's LLM pace in proportion (its
utilization of the slots kept); RAG-Anything as shipped keeps LightRAG's own
concurrency, so its LLM capacity never exceeds what it had in flight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ragopt.measure.estimators import Estimate, add, regression_total
from ragopt.measure.growth import growth_points, poisson_ratio
from ragopt.measure.ledger import VISION_KINDS, Prices
from ragopt.measure.merge_growth import MergeGrowth, fit_merge_growth
from ragopt.measure.plan_pace import ModeFit, fit_mode, service_seconds

if TYPE_CHECKING:
    from ragopt.measure.plan_prediction import Prediction

UNITS = ("text_chunks", "chunk_ktokens", "modal_items", "images", "tables", "equations")
KIND_UNITS = {
    "extract": ("text_chunks", "chunk_ktokens", "modal_items"),
    "glean": ("text_chunks", "chunk_ktokens", "modal_items"),
    "image": ("images",),
    "table": ("tables",),
    "equation": ("equations",),
}
OTHER_UNITS = ("text_chunks", "modal_items")
MEASURES = ("calls", "prompt_tokens", "completion_tokens")
GROWN = "summary"  # the kind predicted from the graph as it grows, not per document


def units(scan: pd.DataFrame) -> pd.DataFrame:
    """The scan's units per document, with chunks counted by LightRAG (text and modal chunks)."""
    frame = scan[["file", "text_chunks", "modal_items", "images", "tables", "equations"]].copy()
    frame["chunk_ktokens"] = scan["chunk_tokens"] / 1000
    frame["chunks"] = scan["text_chunks"] + scan["modal_items"]
    return frame.set_index("file")


@dataclass(frozen=True)
class Latency:
    """Service seconds of a call: ttft + completion tokens x tpot."""

    ttft_s: float
    tpot_s: float
    source: str

    def service_s(self, calls: float, completion_tokens: float) -> float:
        return calls * self.ttft_s + completion_tokens * self.tpot_s


def embeds_on_this_cpu(config: Any) -> bool:
    """Whether the configured embedder runs on this machine's CPU (not an endpoint, not a GPU)."""
    from ragopt.backends import embedding_device

    return not config.embedding_base_url and embedding_device(config).resolve() == "cpu"


def preset_latency(name: str) -> Latency:
    from ragopt.backends.llm_sim import PRESETS

    preset = PRESETS[name]
    return Latency(preset["ttft_s"], preset["tpot_s"], f"simulator preset {name!r}")


def _fit_latency(run: Any) -> Tuple[Latency, float]:
    """(ttft + tpot fit over the sample's successful calls, failed attempts' service per successful second)."""
    calls = run.llm_calls
    ok = calls[calls["outcome"] == "ok"]
    service = service_seconds(ok).to_numpy()
    completion = pd.to_numeric(ok["completion_tokens"], errors="coerce").fillna(0).to_numpy(dtype=float)
    source = "fitted on the sample's " + ("simulator plan" if calls["planned_ns"].notna().all() else "measured service times")
    if len(ok) >= 2 and np.ptp(completion) > 0:
        (ttft, tpot), *_ = np.linalg.lstsq(np.column_stack([np.ones_like(completion), completion]), service, rcond=None)
        ttft, tpot = max(0.0, float(ttft)), max(0.0, float(tpot))
    else:
        ttft, tpot = (float(service.mean()) if len(service) else 0.0), 0.0
    failed = float(service_seconds(calls[calls["outcome"] != "ok"]).sum())
    return Latency(ttft, tpot, source), failed / float(service.sum()) if service.sum() else 0.0


@dataclass
class PlanModel:
    """What ``fit`` learned from the sample; ``predict`` applies it to a corpus's scan."""

    sample: pd.DataFrame
    """Per sampled document: its units (columns of UNITS) and per kind its calls and tokens (``<kind>.<measure>``)."""
    kinds: List[str]
    unattributed: Dict[str, Dict[str, float]]
    """Per kind, what the sample's calls that name no document added up to (scaled by chunks when predicting)."""
    summary_points: Tuple[np.ndarray, np.ndarray]
    """(chunks ingested, summary calls so far) along the sample run: the fallback where ``merges`` is None."""
    merges: Optional[MergeGrowth]
    summary_tokens_per_call: Dict[str, float]
    latency: Latency
    failed_share: float
    modes: Dict[str, ModeFit]
    cpu_s_per_chunk: Optional[float]
    simulated: bool
    models: Dict[str, str] = field(default_factory=dict)

    def predict(self, corpus: pd.DataFrame, slots: Optional[int] = None, latency: "Latency | str | None" = None,
                parse_workers: Optional[int] = None, prices: Optional[Prices] = None) -> "Prediction":
        from ragopt.measure.plan_prediction import predict

        if isinstance(latency, str):
            latency = preset_latency(latency)
        return predict(self, corpus, slots=slots, latency=latency or self.latency, parse_workers=parse_workers,
                       prices=prices or Prices())


def document_files(run: Any, files: Dict[str, str]) -> Dict[str, str]:
    """The run's document ids -> corpus files (``files``: the run's file paths -> the corpus files they copy)."""
    return {d: files.get(str(f), str(f)) for d, f in zip(run.docs["doc_id"], run.docs["file"]) if isinstance(d, str)}


def per_document(run: Any, files: Dict[str, str]) -> Tuple[pd.DataFrame, Dict[str, Dict[str, float]]]:
    """The run's calls and tokens per (corpus file, kind), and the totals of calls that name no document."""
    calls = run.llm_calls.copy()
    calls["corpus_file"] = calls["doc_id"].map(document_files(run, files))
    calls["calls"] = 1
    for measure in ("prompt_tokens", "completion_tokens"):
        calls[measure] = pd.to_numeric(calls[measure], errors="coerce").fillna(0)
    calls["kind"] = calls["kind"].fillna("unknown")
    attributed = calls[calls["corpus_file"].notna() & (calls["kind"] != GROWN)]
    if attributed.empty:
        table = pd.DataFrame(index=pd.Index([], name="corpus_file"))
    else:
        table = attributed.pivot_table(index="corpus_file", columns="kind", values=list(MEASURES), aggfunc="sum", fill_value=0)
        table.columns = [f"{kind}.{measure}" for measure, kind in table.columns]
    loose = calls[calls["corpus_file"].isna() & (calls["kind"] != GROWN)]
    unattributed = {kind: {m: float(g[m].sum()) for m in MEASURES} for kind, g in loose.groupby("kind")}
    return table, unattributed


def fit(sample_scan: pd.DataFrame, runs: Dict[str, Any], files: Dict[str, Dict[str, str]],
        parse_workers: Optional[int] = None, embeds_on_cpu: bool = True) -> PlanModel:
    """Fit the model on the sample: ``runs`` by mode (``ragopt`` first: its calls are the corpus's LLM work),
    ``files`` by mode: each run's file paths -> corpus files; ``embeds_on_cpu``: the embedder runs on this
    machine's CPU (its work is then part of the CPU stage's)."""
    chosen = runs["ragopt"]
    sample_units = units(sample_scan)
    doc_units = sample_units["chunks"].to_dict()
    run_units = {mode: {run_file: doc_units.get(corpus_file, 0.0) for run_file, corpus_file in files[mode].items()} for mode in runs}
    table, unattributed = per_document(chosen, files["ragopt"])
    sample = sample_units.join(table, how="left").fillna(0)
    kinds = sorted({c.split(".", 1)[0] for c in table.columns} | set(unattributed))
    summaries = chosen.llm_calls[chosen.llm_calls["kind"] == GROWN]
    summary_tokens = {m: float(pd.to_numeric(summaries[m], errors="coerce").fillna(0).mean()) if len(summaries) else 0.0
                      for m in ("prompt_tokens", "completion_tokens")}
    latency, failed_share = _fit_latency(chosen)
    cores = len(os.sched_getaffinity(0))
    workers = parse_workers or cores
    parse_s = float(sample_scan["parse_s"].fillna(0).sum())
    modes = {mode: fit_mode(run, parse_s, workers, cores, embeds_on_cpu) for mode, run in runs.items()}
    chunks = float(sample_units["chunks"].sum())
    summary_points = growth_points(chosen, run_units["ragopt"], summaries["end_s"], pd.Series(1.0, index=summaries.index))
    return PlanModel(
        sample=sample, kinds=kinds, unattributed=unattributed, summary_points=summary_points,
        merges=fit_merge_growth(chosen, document_files(chosen, files["ragopt"]), doc_units, summary_points),
        summary_tokens_per_call=summary_tokens, latency=latency, failed_share=failed_share, modes=modes,
        cpu_s_per_chunk=modes["ragopt"].cpu_s / chunks if chunks else None,
        simulated=bool(chosen.simulated), models=chosen.ledger(Prices()).models,
    )


def kind_estimate(model: PlanModel, corpus_units: pd.DataFrame, kind: str, measure: str) -> Estimate:
    """The corpus total of one kind's calls or tokens (the regression estimator over its units)."""
    columns = KIND_UNITS.get(kind, OTHER_UNITS)
    sample = model.sample
    column = f"{kind}.{measure}"
    y = sample[column] if column in sample else pd.Series(0.0, index=sample.index)
    rest = corpus_units.loc[~corpus_units.index.isin(sample.index), list(columns)]
    estimate = regression_total(y.to_numpy(), sample[list(columns)].to_numpy(), rest.sum().to_numpy(), len(rest),
                                f"{kind} {measure.replace('_', ' ')}: per document from its {', '.join(columns)}",
                                seen=float(y[y.index.isin(corpus_units.index)].sum()))
    loose = model.unattributed.get(kind, {}).get(measure, 0.0)
    if loose:
        chunks_sample, chunks_total = float(sample["chunks"].sum()), float(corpus_units["chunks"].sum())
        estimate = add([estimate, poisson_ratio(loose, chunks_sample, chunks_total, f"{kind} calls naming no document")],
                       estimate.how + " + calls naming no document by the sample's ratio")
    return estimate


def model_of(kind: str, models: Dict[str, str]) -> str:
    """The model a kind's calls go to (RAG-Anything sends image prompts to the vision model)."""
    return models.get("vision", models.get("llm", "unknown")) if kind in VISION_KINDS else models.get("llm", "unknown")
