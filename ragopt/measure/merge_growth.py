"""Merge summaries as the graph grows, from the sample's own graph keys.

LightRAG merges, per document, one description fragment per chunk into each
entity and relation the chunk names; once a key holds
``force_llm_summary_on_merge`` fragments (8 by default) an LLM call
summarizes them into one, and the pile starts again from that summary. So a
key named in m chunks costs about floor((m - 1) / (T - 1)) summaries, and a
corpus's summaries grow faster than its documents wherever entities recur.

From the sample run: which keys each sampled document's chunks named
(``Run.llm_calls.graph_keys`` of its extraction and gleaning calls). For a
corpus x times the sample's chunks, each key's count scales by x (a
frequent entity of the sample is as frequent in the corpus). The prediction
is the sample's measured summary calls plus what the mechanism adds between
the sample's scale and the corpus's; its interval comes from resampling the
sample's documents (bootstrap).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ragopt.measure.estimators import LEVEL, Estimate, exact

BOOTSTRAPS = 400


def summary_threshold() -> int:
    """LightRAG's ``force_llm_summary_on_merge`` as its dataclass defaults it (FORCE_LLM_SUMMARY_ON_MERGE)."""
    from lightrag import LightRAG

    field = {f.name: f for f in dataclasses.fields(LightRAG)}["force_llm_summary_on_merge"]
    return int(field.default if field.default is not dataclasses.MISSING else field.default_factory())


def document_keys(run: Any, doc_files: Dict[str, str]) -> Dict[str, Counter]:
    """Per corpus file: how many of its chunks named each graph key (extraction and gleaning of a chunk together)."""
    calls = run.llm_calls
    calls = calls[calls["kind"].isin(["extract", "glean"]) & calls["doc_id"].isin(list(doc_files)) & calls["graph_keys"].notna()]
    per_chunk: Dict[Tuple[str, Any], set] = {}
    for doc_id, chunk, keys in zip(calls["doc_id"], calls["chunk"], calls["graph_keys"]):
        per_chunk.setdefault((doc_files[doc_id], chunk), set()).update(keys)
    documents: Dict[str, Counter] = {}
    for (file, _), keys in per_chunk.items():
        documents.setdefault(file, Counter()).update(keys)
    return documents


def _summaries(counts: np.ndarray, scale: np.ndarray, threshold: int) -> np.ndarray:
    """Summaries of keys named ``counts`` times (last axis), each count scaled by ``scale``."""
    scaled = counts * np.asarray(scale)[..., None]
    return np.floor(np.maximum(scaled - 1, 0) / (threshold - 1)).sum(axis=-1)


@dataclass
class MergeGrowth:
    """The sample's key counts per document, its chunks, and its measured summary calls."""

    counts: np.ndarray
    """documents x keys: chunks of each sampled document that named each key."""
    units: np.ndarray
    measured: float
    curve: Tuple[np.ndarray, np.ndarray]
    """(chunks ingested, summary calls so far) at each completed document of the sample run."""
    threshold: int

    def summaries(self, chunks: float) -> Estimate:
        """Summary calls for a corpus of ``chunks`` chunks."""
        sample_chunks = float(self.units.sum())
        if chunks <= sample_chunks or not self.counts.size:  # within the sample: what its run measured there
            x, y = self.curve
            value = float(np.interp(chunks, x, y)) if len(x) else self.measured
            return exact(value, "merge summary calls: measured on the sample's growth curve")
        total = self.counts.sum(axis=0)
        value = self.measured + float(_summaries(total, chunks / sample_chunks, self.threshold)
                                      - _summaries(total, 1.0, self.threshold))
        rng = np.random.default_rng(0)
        n = len(self.units)
        weights = rng.multinomial(n, np.full(n, 1 / n), size=BOOTSTRAPS)
        counts, units = weights @ self.counts, weights @ self.units
        draws = self.measured + _summaries(counts, chunks / units, self.threshold) - _summaries(counts, sample_chunks / units, self.threshold)
        lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return Estimate(value, float(min(lo, value)), float(max(hi, value)),
                        f"merge summary calls: the sample's, plus LightRAG's summary rule (every {self.threshold - 1} "
                        "fragments of a key) on its key counts scaled to the corpus; bootstrap interval")


def fit_merge_growth(run: Any, doc_files: Dict[str, str], doc_units: Dict[str, float],
                     curve: Tuple[np.ndarray, np.ndarray]) -> Optional[MergeGrowth]:
    """The merge model of a sample run; None when its extractions name no graph keys (answers in another format)."""
    documents = document_keys(run, doc_files)
    if not documents:
        return None
    keys = sorted(set().union(*documents.values()))
    index = {key: i for i, key in enumerate(keys)}
    files = sorted(doc_units)  # every sampled document, those that named no key too
    counts = np.zeros((len(files), len(keys)))
    for row, file in enumerate(files):
        for key, count in documents.get(file, Counter()).items():
            counts[row, index[key]] = count
    measured = float((run.llm_calls["kind"] == "summary").sum())
    units = np.array([doc_units.get(file, 0.0) for file in files])
    return MergeGrowth(counts, units, measured, curve, summary_threshold())

