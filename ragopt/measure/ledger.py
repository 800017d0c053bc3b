"""The token and cost ledger of a run: every LLM, vision and embedding call, its tokens, and what it cost.

Tokens are the run's own (``Run.llm_calls``): the simulator's counts, the
endpoint's ``usage``, or ragopt's offline tokenizer where an endpoint reports
none; each row says which (``token_source``). Costs come from a price table
(``Prices``, a TOML or YAML file; ``RAGOPT_PRICES``): per model, input, output
and cached-input dollars per million tokens, and per embedding model. No
price is built in, since none would stay current: a model the table does not
name costs "no price" (NaN), never zero.

A refused or failed request (429, timeout, 5xx) keeps its tokens in the token
totals but is not billed. A hit of LightRAG's LLM cache never reached the
model: it costs nothing and is shown as saved tokens and saved cost, at the
price of the model it would have gone to.

Per-document figures come from where each call came from (``ragopt.engine.observe``):
extraction and gleaning by the chunk they quote, multimodal calls by the
document whose task made them; LightRAG's merge summaries serve the whole
graph, and are listed as shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import pandas as pd

from ragopt.measure.run import EXTRACT_KINDS, MULTIMODAL_KINDS

PER = 1e6  # prices are per million tokens
NO_PRICE = "no price"
SHARED = "(shared: merge summaries)"
UNATTRIBUTED = "(unattributed)"
VISION_KINDS = frozenset({"image", "vision"})  # RAG-Anything sends these to the vision model


def stage_of(kind: Optional[str]) -> str:
    """The stage a prompt kind belongs to (the grouping of ``Run.stage_seconds``)."""
    if kind in EXTRACT_KINDS:
        return "extract"
    if kind == "summary":
        return "merge"
    if kind in MULTIMODAL_KINDS:
        return "multimodal"
    if kind in ("keywords", "query", "describe"):
        return "query"
    return "other"


@dataclass(frozen=True)
class ModelPrice:
    """Dollars (or the table's currency) per million tokens; cached input defaults to the input price."""

    input: float
    output: float = 0.0
    cached_input: Optional[float] = None


@dataclass(frozen=True)
class Prices:
    """A price table: ``models`` (LLM and vision) and ``embeddings``, each by model name."""

    models: Dict[str, ModelPrice] = field(default_factory=dict)
    embeddings: Dict[str, float] = field(default_factory=dict)
    currency: str = "USD"
    source: Optional[str] = None

    @classmethod
    def load(cls, path: str | Path) -> "Prices":
        """A table from TOML (``[models."name"] input/output/cached_input``, ``[embeddings."name"] input``) or YAML."""
        path = Path(path)
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            import tomllib

            data = tomllib.loads(text)
        models = {name: ModelPrice(**{k: float(v) for k, v in entry.items()}) for name, entry in (data.get("models") or {}).items()}
        embeddings = {name: float(entry["input"]) for name, entry in (data.get("embeddings") or {}).items()}
        return cls(models, embeddings, str(data.get("currency", "USD")), str(path))

    @classmethod
    def from_config(cls, config: Any) -> "Prices":
        """RAGOPT_PRICES's table, or an empty one (every cost "no price")."""
        return cls.load(config.prices) if getattr(config, "prices", None) else cls()

    @classmethod
    def resolve(cls, prices: "Prices | str | Path | None") -> "Prices":
        if isinstance(prices, Prices):
            return prices
        if prices is not None:
            return cls.load(prices)
        from ragopt.config import RagoptConfig

        return cls.from_config(RagoptConfig.from_env())


def _per_million(tokens: pd.Series, price: Optional[float]) -> pd.Series:
    return tokens.astype(float) * (math.nan if price is None else price) / PER


def _models(run: Any, llm_model: Optional[str], vision_model: Optional[str], embedding_model: Optional[str]) -> Dict[str, str]:
    config = run.meta.get("config") or {}
    llm = llm_model or config.get("llm_model") or "unknown"
    if embedding_model is None:
        from ragopt.backends.embedding import MODEL_NAME

        embedding_model = config.get("embedding_model") or MODEL_NAME
    return {"llm": llm, "vision": vision_model or config.get("vision_model") or llm, "embedding": embedding_model}


@dataclass
class Ledger:
    """Every call's tokens and cost (``calls``, ``embeddings``, ``cache_hits``), and their groupings."""

    calls: pd.DataFrame
    embeddings: pd.DataFrame
    cache_hits: pd.DataFrame
    prices: Prices
    models: Dict[str, str]
    simulated: bool

    @classmethod
    def of(cls, run: Any, prices: "Prices | str | Path | None" = None, llm_model: Optional[str] = None,
           vision_model: Optional[str] = None, embedding_model: Optional[str] = None) -> "Ledger":
        """The ledger of ``run``; the models default to the run's configured ones."""
        prices = Prices.resolve(prices)
        models = _models(run, llm_model, vision_model, embedding_model)
        return cls(_priced_calls(run, prices, models), _priced_embeddings(run, prices, models["embedding"]),
                   _priced_calls(run, prices, models, hits=True), prices, models, run.simulated)

    # -- groupings -----------------------------------------------------------------
    def _group(self, by: str) -> pd.DataFrame:
        calls = self.calls
        grouped = calls.groupby(by, dropna=False)
        table = pd.DataFrame({
            "calls": grouped.size(),
            "billed_calls": grouped["billed"].sum(),
            "prompt_tokens": grouped["prompt_tokens"].sum(),
            "completion_tokens": grouped["completion_tokens"].sum(),
            "cost": grouped["cost"].sum(min_count=1),
        })
        unpriced = grouped.apply(lambda g: bool((g["billed"] & g["cost"].isna()).any()), include_groups=False)
        table.loc[unpriced[unpriced].index, "cost"] = math.nan  # a partly priced group has no total price
        hits = self.cache_hits.groupby(by, dropna=False)
        saved = pd.DataFrame({"cache_hits": hits.size(), "saved_tokens": hits["prompt_tokens"].sum() + hits["completion_tokens"].sum(),
                              "saved_cost": hits["cost"].sum(min_count=1)})
        table = table.join(saved, how="outer")
        table[["calls", "billed_calls", "prompt_tokens", "completion_tokens", "cache_hits", "saved_tokens"]] = table[
            ["calls", "billed_calls", "prompt_tokens", "completion_tokens", "cache_hits", "saved_tokens"]].fillna(0).astype(int)
        table.loc[table["cache_hits"] == 0, "saved_cost"] = 0.0  # nothing saved costs nothing, priced or not
        return table.reset_index()

    def by_kind(self) -> pd.DataFrame:
        """Calls, tokens, cost and LLM-cache savings per prompt kind (extract, glean, summary, image, ...)."""
        return self._group("kind")

    def by_stage(self) -> pd.DataFrame:
        """The same per stage (extract, merge, multimodal, ...), with the embedding stage's tokens and cost."""
        table = self._group("stage")
        embed = self.embeddings
        row = {"stage": "embed", "calls": len(embed), "billed_calls": len(embed), "prompt_tokens": int(embed["tokens"].fillna(0).sum()),
               "completion_tokens": 0, "cost": _total(embed["cost"]), "cache_hits": 0, "saved_tokens": 0, "saved_cost": 0.0}
        return pd.concat([table, pd.DataFrame([row])], ignore_index=True) if len(embed) else table

    def by_document(self) -> pd.DataFrame:
        """The same per document; merge summaries (shared by the whole graph) and calls that name no chunk on rows of their own."""
        return self._group("document")

    def totals(self) -> Dict[str, Any]:
        """Headline figures: tokens in and out, calls, cost (None = "no price"), embedding tokens, savings."""
        calls, embed, hits = self.calls, self.embeddings, self.cache_hits
        llm_cost = _total(calls["cost"][calls["billed"]])
        embedding_cost = _total(embed["cost"]) if len(embed) else 0.0
        return {
            "simulated_llm": self.simulated,
            "currency": self.prices.currency,
            "prices": self.prices.source,
            "models": dict(self.models),
            "llm_calls": len(calls),
            "billed_calls": int(calls["billed"].sum()),
            "prompt_tokens": int(calls["prompt_tokens"].sum()),
            "completion_tokens": int(calls["completion_tokens"].sum()),
            "token_sources": {str(k): int(v) for k, v in calls["token_source"].fillna("none").value_counts().items()},
            "llm_cost": llm_cost,
            "embedding_calls": len(embed),
            "embedding_tokens": int(embed["tokens"].fillna(0).sum()),
            "embedding_cost": embedding_cost,
            "cost": None if llm_cost is None or embedding_cost is None else llm_cost + embedding_cost,
            "cache_hits": len(hits),
            "saved_tokens": int(hits["prompt_tokens"].sum() + hits["completion_tokens"].sum()),
            "saved_cost": _total(hits["cost"]) if len(hits) else 0.0,
        }

    def record(self) -> Dict[str, Any]:
        """JSON-ready: the totals and each grouping, for a run record."""
        def rows(frame: pd.DataFrame) -> list:
            return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]

        return {"totals": self.totals(), "by_kind": rows(self.by_kind()), "by_stage": rows(self.by_stage()),
                "by_document": rows(self.by_document())}

    def text(self) -> str:
        """The ledger as printed by ``ragopt ledger``; a missing price reads "no price"."""
        totals = self.totals()
        lines = []
        if self.simulated:
            lines.append("Figures measured on the SIMULATED LLM service (tokens are the simulator's; the prices are the table's).")
        lines.append(f"models: {self.models}   prices: {self.prices.source or 'none given (RAGOPT_PRICES or --prices)'}   currency: {self.prices.currency}")
        for title, frame in (("by prompt kind", self.by_kind()), ("by stage", self.by_stage()), ("by document", self.by_document())):
            shown = frame.copy()
            for column in ("cost", "saved_cost"):
                shown[column] = shown[column].map(_money)
            lines += ["", title, shown.to_string(index=False)]
        lines += ["", "totals"] + [f"  {k}: {_money(v) if k.endswith('cost') else v}" for k, v in totals.items()]
        return "\n".join(lines)


def _priced_calls(run: Any, prices: Prices, models: Dict[str, str], hits: bool = False) -> pd.DataFrame:
    """The LLM calls (or the LLM-cache hits) with their stage, document, model and cost."""
    source = run.llm_cache_hits if hits else run.llm_calls
    calls = source.copy()
    calls["kind"] = calls["kind"].fillna("unknown")
    calls["stage"] = calls["kind"].map(stage_of)
    calls["model"] = [models["vision"] if kind in VISION_KINDS else models["llm"] for kind in calls["kind"]]
    for column in ("prompt_tokens", "completion_tokens"):
        calls[column] = pd.to_numeric(calls[column], errors="coerce").fillna(0).astype(int)
    cached = pd.to_numeric(calls.get("cached_prompt_tokens", pd.Series(0, index=calls.index)), errors="coerce").fillna(0)
    calls["cached_prompt_tokens"] = cached.astype(int)
    calls["billed"] = False if hits else calls["outcome"].eq("ok")
    price_of = {name: prices.models.get(name) for name in set(calls["model"])}
    cost = pd.Series(math.nan, index=calls.index)
    for name, price in price_of.items():
        mine = calls["model"] == name
        if price is None:
            continue
        cached_price = price.input if price.cached_input is None else price.cached_input
        fresh = calls.loc[mine, "prompt_tokens"] - calls.loc[mine, "cached_prompt_tokens"]
        cost[mine] = (_per_million(fresh, price.input) + _per_million(calls.loc[mine, "cached_prompt_tokens"], cached_price)
                      + _per_million(calls.loc[mine, "completion_tokens"], price.output))
    # A hit is valued at what the call would have cost; an unbilled request costs nothing.
    calls["cost"] = cost if hits else cost.where(calls["billed"], 0.0)
    calls["document"] = _documents(run, calls)
    return calls


def _documents(run: Any, calls: pd.DataFrame) -> pd.Series:
    """Each call's document, named by its file where the run knows it."""
    files = {d: f for d, f in zip(run.docs["doc_id"], run.docs["file"]) if isinstance(d, str)}

    def name(doc_id: Any, file: Any, kind: str) -> str:
        if isinstance(doc_id, str):
            return files.get(doc_id) or (file if isinstance(file, str) else doc_id)
        if isinstance(file, str):
            return file
        return SHARED if kind == "summary" else UNATTRIBUTED

    return pd.Series([name(d, f, k) for d, f, k in zip(calls["doc_id"], calls["file"], calls["kind"])], index=calls.index, dtype=object)


def _priced_embeddings(run: Any, prices: Prices, model: str) -> pd.DataFrame:
    embed = run.embedding_calls.copy()
    embed["model"] = model
    embed["tokens"] = pd.to_numeric(embed["tokens"], errors="coerce")
    embed["cost"] = _per_million(embed["tokens"], prices.embeddings.get(model))
    return embed


def _total(costs: pd.Series) -> Optional[float]:
    """The sum, or None when any of them has no price."""
    return None if costs.isna().any() else float(costs.sum())


def _money(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_PRICE
    return f"{value:.4f}"


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value
