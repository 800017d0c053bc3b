"""Merge summaries as the graph grows, from the sample's own graph keys.

LightRAG merges, per document, one description fragment per chunk into each
entity and relation the chunk names; once a key holds
``force_llm_summary_on_merge`` fragments (8 by default) an LLM call
summarizes them into one, and the pile starts again from that summary. So a
key named in m chunks costs about floor((m - 1) / (T - 1)) summaries, and a
corpus's summaries grow faster than its documents wherever entities recur.

From the sample run: which keys each sampled document's chunks named
(``Run.llm_calls.graph_keys`` of its extraction and gleaning calls). How
often a key recurs in the corpus is not its sample count times the
corpus's scale: most keys the sample saw in one document are rare keys of
which the corpus holds many others, not frequent ones. So the model works
on document occurrence, the unit the sample draws:

- a key named in D of the corpus's N documents is named in d of the n
  sampled ones with the hypergeometric probability;
- the distribution of D over the keys the sample saw is recovered from the
  sample's d by deconvolution (the nonparametric maximum-likelihood mixture,
  by EM, of the zero-truncated hypergeometric);
- each seen key then stands for 1 / P(seen | D) keys of the corpus
  (Horvitz-Thompson), and a key in D documents at its sample's chunks per
  document r is named in D x r chunks. Keys too rare to be seen are too
  rare to reach T fragments, so they add nothing either way.

The prediction is the sample's measured summary calls plus what the rule
adds between the sample's key counts and the corpus's; its interval comes
from resampling the sample's documents (bootstrap).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ragopt.measure.estimators import LEVEL, Estimate, exact

BOOTSTRAPS = 200
EM_ITERATIONS = 400


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


def rule(fragments: np.ndarray, threshold: int) -> np.ndarray:
    """LightRAG's summaries of keys holding ``fragments`` fragments each."""
    return np.floor(np.maximum(np.asarray(fragments, dtype=float) - 1, 0) / (threshold - 1))


def occurrence_grid(n_corpus: int) -> np.ndarray:
    """Document counts D to deconvolve over: every one up to 200, then geometric steps to the corpus size."""
    small = np.arange(1, min(n_corpus, 200) + 1)
    large = np.geomspace(201, n_corpus, 200).round() if n_corpus > 200 else np.array([])
    return np.unique(np.concatenate([small, large])).astype(int)


def corpus_summaries(docs: np.ndarray, chunks: np.ndarray, n_sample: int, n_corpus: int, threshold: int) -> float:
    """The rule's summaries over the corpus's keys, from each seen key's sampled documents and chunks (see the module)."""
    from scipy.stats import hypergeom

    seen = docs > 0
    docs, chunks = docs[seen], chunks[seen]
    if not len(docs) or n_corpus <= n_sample:
        return float(rule(chunks, threshold).sum())
    grid = occurrence_grid(n_corpus)
    values, key_value = np.unique(docs.round().astype(int), return_inverse=True)
    p_seen = 1 - hypergeom.pmf(0, n_corpus, grid, n_sample)
    likelihood = hypergeom.pmf(values[:, None], n_corpus, grid[None, :], n_sample) / p_seen  # P(d | D, seen)
    weight = np.bincount(key_value, minlength=len(values)).astype(float)
    mixture = np.full(len(grid), 1 / len(grid))
    for _ in range(EM_ITERATIONS):
        joint = mixture * likelihood
        posterior = joint / joint.sum(axis=1, keepdims=True)
        mixture = weight @ posterior / weight.sum()
    joint = mixture * likelihood
    posterior = joint / joint.sum(axis=1, keepdims=True)  # per distinct d: P(D | d)
    per_doc = chunks / docs  # the key's chunks per naming document, as the sample saw it
    fragments = grid[None, :] * per_doc[:, None]
    return float((posterior[key_value] * rule(fragments, threshold) / p_seen).sum())


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

    def _added(self, counts: np.ndarray, n_corpus: int) -> float:
        """What the rule adds between these sampled documents' key counts and the corpus's."""
        docs, chunks = (counts > 0).sum(axis=0), counts.sum(axis=0)
        return corpus_summaries(docs, chunks, len(counts), n_corpus, self.threshold) - float(rule(chunks, self.threshold).sum())

    def summaries(self, chunks: float, documents: int) -> Estimate:
        """Summary calls for a corpus of ``documents`` documents and ``chunks`` chunks."""
        n = len(self.units)
        if documents <= n or chunks <= float(self.units.sum()) or not self.counts.size:
            x, y = self.curve  # within the sample: what its run measured there
            value = float(np.interp(chunks, x, y)) if len(x) else self.measured
            return exact(value, "merge summary calls: measured on the sample's growth curve")
        value = self.measured + self._added(self.counts, documents)
        rng = np.random.default_rng(0)
        draws = []
        for weights in rng.multinomial(n, np.full(n, 1 / n), size=BOOTSTRAPS):
            picked = np.repeat(np.arange(n), weights)
            draws.append(self.measured + self._added(self.counts[picked], documents))
        lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
        return Estimate(value, float(min(lo, value)), float(max(hi, value)),
                        f"merge summary calls: the sample's, plus LightRAG's summary rule (every {self.threshold - 1} "
                        "fragments of a key) on the corpus's key counts deconvolved from the sample's document "
                        "occurrences; bootstrap interval")


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
