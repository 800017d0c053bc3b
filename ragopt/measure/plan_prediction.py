"""A corpus's predicted calls, tokens, cost and wall time, from a fitted ``PlanModel`` (see ``plan_model``).

Every figure here is a prediction with its 95% interval (``Estimate``),
except the scan's own counts (documents, chunks, parse seconds), which were
measured on the whole corpus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import pandas as pd

from ragopt.measure.estimators import Estimate, add, exact
from ragopt.measure.ledger import PER, Prices
from ragopt.measure.growth import growth_total, poisson_ratio
from ragopt.measure.plan_model import GROWN, MEASURES, Latency, PlanModel, kind_estimate, model_of, units
from ragopt.measure.plan_pace import ModeFit

PREDICTED = "prediction"


@dataclass
class ModePrediction:
    """One mode's predicted wall time: its overhead plus its bounding stage, with each stage's seconds."""

    mode: str
    label: str
    wall: Estimate
    stages: Dict[str, Estimate]
    bound: str
    limit_s: float
    overhead_s: float

    @property
    def wall_over_limit(self) -> Optional[float]:
        return self.wall.value / self.limit_s if self.limit_s > 0 else None


@dataclass
class Prediction:
    """What the corpus will take; ``to_dict`` and ``text`` say which figures are predictions."""

    documents: int
    chunks: int
    parse_s: float
    slots: int
    parse_workers: int
    latency: Latency
    simulated: bool
    calls: Dict[str, Estimate]
    prompt_tokens: Dict[str, Estimate]
    completion_tokens: Dict[str, Estimate]
    cost: Dict[str, Optional[Estimate]]
    prices: Prices
    service_s: Estimate
    embedding_texts: Dict[str, Estimate]
    embedding_tokens: Estimate
    modes: Dict[str, ModePrediction]
    cpu_s_per_chunk: Optional[float]

    def total(self, what: str) -> Estimate:
        """The sum over kinds of ``calls``, ``prompt_tokens`` or ``completion_tokens``."""
        return add(list(getattr(self, what).values()), f"{what} of every kind")

    def kinds_table(self) -> pd.DataFrame:
        """Calls and tokens by prompt kind, each with its interval."""
        rows = []
        for kind in self.calls:
            row = {"kind": kind}
            for what in MEASURES:
                estimate = getattr(self, what)[kind]
                row.update({what: estimate.value, f"{what}_lo": estimate.lo, f"{what}_hi": estimate.hi})
            cost = self.cost.get(kind)
            row.update(cost=None if cost is None else cost.value, cost_lo=None if cost is None else cost.lo,
                       cost_hi=None if cost is None else cost.hi)
            rows.append(row)
        return pd.DataFrame(rows)

    def modes_table(self) -> pd.DataFrame:
        """Wall time per mode with its interval, the stage that bounds it and each stage's seconds."""
        rows = []
        for mode in self.modes.values():
            row = {"mode": mode.label, "wall_s": mode.wall.value, "wall_lo_s": mode.wall.lo, "wall_hi_s": mode.wall.hi,
                   "bound": mode.bound, "llm_bound_limit_s": mode.limit_s, "wall_over_limit": mode.wall_over_limit,
                   "overhead_s": mode.overhead_s}
            row.update({f"{stage} s": estimate.value for stage, estimate in mode.stages.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> Dict[str, Any]:
        def estimates(values: Dict[str, Optional[Estimate]]) -> Dict[str, Any]:
            return {k: None if v is None else v.to_dict() for k, v in values.items()}

        return {
            "figures": PREDICTED, "simulated_llm": self.simulated,
            "measured_by_scan": {"documents": self.documents, "chunks": self.chunks, "parse_s": self.parse_s},
            "settings": {"slots": self.slots, "parse_workers": self.parse_workers, "ttft_s": self.latency.ttft_s,
                         "tpot_s": self.latency.tpot_s, "latency": self.latency.source},
            "calls": estimates(self.calls), "prompt_tokens": estimates(self.prompt_tokens),
            "completion_tokens": estimates(self.completion_tokens),
            "totals": {what: self.total(what).to_dict() for what in MEASURES},
            "cost": estimates(self.cost), "currency": self.prices.currency, "prices": self.prices.source,
            "llm_service_s": self.service_s.to_dict(),
            "embedding_texts": estimates(self.embedding_texts), "embedding_tokens": self.embedding_tokens.to_dict(),
            "modes": {m.mode: {"label": m.label, "wall_s": m.wall.to_dict(), "bound": m.bound, "llm_bound_limit_s": m.limit_s,
                               "wall_over_limit": m.wall_over_limit, "overhead_s": m.overhead_s,
                               "stages_s": estimates(m.stages)} for m in self.modes.values()},
            "cpu_s_per_chunk_measured": self.cpu_s_per_chunk,
        }

    def text(self) -> str:
        """The plan as ``ragopt plan`` prints it."""
        lines = [f"PREDICTION for {self.documents} documents ({self.chunks} chunks, parse {self.parse_s:.1f} s measured by the scan); "
                 f"95% intervals from the sample's variance"]
        if self.simulated:
            lines.append("Fitted on the SIMULATED LLM service.")
        lines.append(f"K = {self.slots} LLM slots, {self.parse_workers} parse workers, latency {self.latency.ttft_s:g} s + "
                     f"{self.latency.tpot_s * 1000:g} ms/token ({self.latency.source})")
        kinds = self.kinds_table()
        shown = pd.DataFrame({
            "kind": kinds["kind"],
            **{what: [str(getattr(self, what)[k]) for k in kinds["kind"]] for what in MEASURES},
            "cost": [_money(self.cost.get(k)) for k in kinds["kind"]],
        })
        lines += ["", "calls and tokens by kind (predicted)", shown.to_string(index=False)]
        for what in MEASURES:
            lines.append(f"  total {what.replace('_', ' ')}: {self.total(what)}")
        lines.append(f"  cost: LLM {_money(self.cost.get('llm'))}, embedding {_money(self.cost.get('embedding'))}, "
                     f"total {_money(self.cost.get('total'))} {self.prices.currency} (prices: {self.prices.source or 'none given'})")
        lines += ["", "wall time (predicted)"]
        for mode in self.modes.values():
            ratio = mode.wall_over_limit
            lines.append(f"  {mode.label}: {mode.wall} s, bound by {mode.bound}; LLM-bound limit {mode.limit_s:,.1f} s"
                         + (f", wall/limit {ratio:.2f}" if ratio else "")
                         + "; stages " + ", ".join(f"{s} {e.value:,.1f} s" for s, e in mode.stages.items()))
        if self.cpu_s_per_chunk is not None:
            lines.append(f"  CPU seconds per chunk on this machine (all processes, measured on the sample): {self.cpu_s_per_chunk:.3f}")
        return "\n".join(lines)


def _money(estimate: Optional[Estimate]) -> str:
    if estimate is None:
        return "no price"
    return str(estimate) if estimate.has_interval else f"{estimate.value:.4g}"


def _scaled_tokens(calls: Estimate, per_call: float, how: str) -> Estimate:
    if not per_call and calls.value > 0:
        return Estimate(0.0, None, None, how + "; the sample made no such call, so their tokens are unknown")
    return Estimate(calls.value * per_call, None if calls.lo is None else calls.lo * per_call,
                    None if calls.hi is None else calls.hi * per_call, how)


def _service(latency: Latency, calls: Dict[str, Estimate], completion: Dict[str, Estimate], failed_share: float) -> Estimate:
    """LLM service seconds; the interval takes every kind's low (high) counts together."""
    def at(pick: str) -> Optional[float]:
        values = [(getattr(calls[k], pick), getattr(completion[k], pick)) for k in calls]
        if any(c is None or t is None for c, t in values):
            return None
        return sum(latency.service_s(c, t) for c, t in values) * (1 + failed_share)

    return Estimate(at("value"), at("lo"), at("hi"), f"ttft x calls + tpot x completion tokens, failed attempts +{failed_share:.1%}")


def _cost(kind_tokens: Dict[str, tuple], prices: Prices, models: Dict[str, str]) -> Dict[str, Optional[Estimate]]:
    """Per kind, and in total, the tokens priced at the kind's model (None: "no price")."""
    costs: Dict[str, Optional[Estimate]] = {}
    for kind, (prompt, completion) in kind_tokens.items():
        price = prices.models.get(model_of(kind, models))
        if price is None:
            costs[kind] = None
            continue
        def at(p: Optional[float], c: Optional[float]) -> Optional[float]:
            return None if p is None or c is None else (p * price.input + c * price.output) / PER
        costs[kind] = Estimate(at(prompt.value, completion.value), at(prompt.lo, completion.lo), at(prompt.hi, completion.hi),
                               f"{kind} tokens at {model_of(kind, models)}'s price")
    priced = list(costs.values())
    costs["llm"] = None if any(c is None for c in priced) else add(priced, "LLM calls")
    return costs


def cpu_work(fit: ModeFit, parse_s: float, merge_work: Estimate) -> Estimate:
    """CPU seconds of the mode's process tree: the corpus's parsing as the scan measured it, and the rest of the
    sample's CPU (merging, embedding, storage writes) grown with the merge work."""
    rest = max(0.0, fit.cpu_s - fit.parse_s)
    grown = merge_work.scaled(rest)
    return Estimate(parse_s + grown.value, None if grown.lo is None else parse_s + grown.lo,
                    None if grown.hi is None else parse_s + grown.hi,
                    f"the scan's parse seconds + the sample's other CPU seconds ({rest:.1f}) x the merge work's growth")


def _mode(fit: ModeFit, is_chosen: bool, service: Estimate, slots: int, parse_s: float, workers: int,
          merge_work: Estimate) -> ModePrediction:
    """Overhead + the longest stage, each stage's work over its capacity (``ModeFit.capacity``)."""
    work = {"LLM slots": service, "parse": Estimate(parse_s, parse_s, parse_s, "measured by the scan"),
            "CPU": cpu_work(fit, parse_s, merge_work)}
    if "embedding" in fit.work:
        work["embedding"] = merge_work.scaled(fit.embed_tokens)

    def over(value: Optional[float], by: float) -> Optional[float]:
        return None if value is None else (value / by if by > 0 else math.inf)

    stages = {}
    for stage, amount in work.items():
        rate, lo, hi = fit.capacity(stage, slots, workers, scales_with_slots=is_chosen)
        stages[stage] = Estimate(over(amount.value, rate), over(amount.lo, hi), over(amount.hi, lo),
                                 f"{amount.how}, over {'the sample pace' if stage in fit.paced else 'nominal capacity'}")
    bound = max(stages, key=lambda s: stages[s].value)

    def wall_at(pick: str) -> Optional[float]:
        values = [getattr(e, pick) for e in stages.values()]
        return None if any(v is None for v in values) else fit.overhead_s + max(values)

    wall = Estimate(wall_at("value"), wall_at("lo"), wall_at("hi"),
                    f"the sample's overhead ({fit.overhead_s:.1f} s) + the bounding stage ({bound})")
    return ModePrediction(fit.mode, fit.label, wall, stages, bound, service.value / slots, fit.overhead_s)


def predict(model: PlanModel, corpus: pd.DataFrame, slots: Optional[int], latency: Latency, parse_workers: Optional[int],
            prices: Prices) -> Prediction:
    """Predict ``corpus`` (its scan) with ``model`` at ``slots``, ``latency`` and ``parse_workers``."""
    ok = corpus[corpus["error"].isna()]
    corpus_units = units(ok)
    chunks = float(corpus_units["chunks"].sum())
    calls, prompt, completion = {}, {}, {}
    for kind in model.kinds:
        calls[kind], prompt[kind], completion[kind] = (kind_estimate(model, corpus_units, kind, m) for m in MEASURES)
    summaries = (model.merges.summaries(chunks, len(ok)) if model.merges is not None
                 else growth_total(*model.summary_points, chunks, "merge summary calls"))
    if summaries.value > 0 or model.summary_tokens_per_call["prompt_tokens"] > 0:
        calls[GROWN] = summaries
        for table, measure in ((prompt, "prompt_tokens"), (completion, "completion_tokens")):
            table[GROWN] = _scaled_tokens(summaries, model.summary_tokens_per_call[measure], f"summary calls x the sample's mean {measure}")
    chosen_fit = model.modes["ragopt"]
    k = slots or chosen_fit.slots
    workers = parse_workers or chosen_fit.parse_workers
    service = _service(latency, calls, completion, model.failed_share)
    parse_s = float(ok["parse_s"].fillna(0).sum())
    sample_chunks = float(model.sample["chunks"].sum())
    merge_work = (model.merges.work_ratio(chunks, len(ok)) if model.merges is not None
                  else exact(chunks / sample_chunks if sample_chunks else 1.0, "merge work: chunks over the sample's"))
    texts = {mode: poisson_ratio(fit.embed_texts, sample_chunks, chunks, f"{fit.label} embedding texts")
             for mode, fit in model.modes.items()}
    embed_tokens = merge_work.scaled(chosen_fit.embed_tokens)
    costs = _cost({kind: (prompt[kind], completion[kind]) for kind in calls}, prices, model.models)
    embedding_price = prices.embeddings.get(model.models.get("embedding", ""))
    costs["embedding"] = None if embedding_price is None else embed_tokens.scaled(embedding_price / PER)
    costs["total"] = None if costs["llm"] is None or costs["embedding"] is None else add([costs["llm"], costs["embedding"]], "LLM + embedding")
    modes = {mode: _mode(fit, mode == "ragopt", service, k, parse_s, workers, merge_work) for mode, fit in model.modes.items()}
    return Prediction(
        documents=len(ok), chunks=int(chunks), parse_s=parse_s, slots=k, parse_workers=workers, latency=latency,
        simulated=model.simulated, calls=calls, prompt_tokens=prompt, completion_tokens=completion, cost=costs, prices=prices,
        service_s=service, embedding_texts=texts, embedding_tokens=embed_tokens, modes=modes, cpu_s_per_chunk=model.cpu_s_per_chunk,
    )


def what_if(model: PlanModel, corpus: pd.DataFrame, slots: List[int], parse_workers: List[int], latency: Optional[Latency] = None,
            prices: Optional[Prices] = None) -> pd.DataFrame:
    """ragopt's predicted wall time for each (slots, parse workers): how it falls with more of either."""
    rows = []
    for k in slots:
        for w in parse_workers:
            p = model.predict(corpus, slots=k, latency=latency, parse_workers=w, prices=prices)
            mode = p.modes["ragopt"]
            rows.append({"slots": k, "parse_workers": w, "wall_s": mode.wall.value, "wall_lo_s": mode.wall.lo,
                         "wall_hi_s": mode.wall.hi, "bound": mode.bound, "figures": PREDICTED})
    return pd.DataFrame(rows)


def window_rates(model: PlanModel, corpus: pd.DataFrame, window: int, slots: Optional[int] = None) -> pd.DataFrame:
    """Predicted docs/min of ragopt per window of ``window`` documents, in the corpus's order, as the graph grows.

    Window j's time is the model's wall time at its last document minus that
    at the previous window's (the first window carries the start overhead).
    """
    ok = corpus[corpus["error"].isna()].reset_index(drop=True)
    rows, previous = [], 0.0
    for end in range(window, len(ok) + 1, window):
        wall = predict(model, ok.iloc[:end], slots, model.latency, None, Prices()).modes["ragopt"].wall.value
        rows.append({"window": len(rows) + 1, "documents": f"{end - window + 1}-{end}",
                     "docs_per_min": window / (wall - previous) * 60 if wall > previous else math.nan, "figures": PREDICTED})
        previous = wall
    return pd.DataFrame(rows)
