"""Merge summaries as the graph grows, from the sample's own graph keys.

LightRAG merges, per document, one description fragment per chunk into each
entity and relation the chunk names; once a key holds
``force_llm_summary_on_merge`` fragments (8 by default) an LLM call
summarizes them into one, and the pile starts again from that summary. So a
key's summaries follow its fragments document by document (a document whose
20 chunks name a key adds 20 fragments in one merge: one summary, where
counting the fragments one by one gives two), and a corpus's summaries grow
faster than its documents wherever entities recur.

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
  rare to reach T fragments, so they add nothing either way;
- N counts the corpus in documents of the sample's mean size (its chunks
  over the sample's chunks per document): keys recur with the text, and a
  stratified sample of a corpus whose sizes vary widely rarely holds its
  largest documents.

The prediction is the rule's summaries on that corpus times the share of
the rule's summaries on the sample that its run made (on real documents
LightRAG made fewer than the rule, for reasons the model does not capture:
34 of 47 on the dev corpus's sample; on synthetic ones about as many); its
interval is the jackknife's over the sampled documents.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ragopt.measure.estimators import Estimate, exact, t_quantile

EM_ITERATIONS = 400
JACKKNIFE_GROUPS = 20


def summary_threshold() -> int:
    """LightRAG's ``force_llm_summary_on_merge`` as its dataclass defaults it (FORCE_LLM_SUMMARY_ON_MERGE)."""
    from ragopt.compat.lightrag import lightrag_default

    return int(lightrag_default("force_llm_summary_on_merge"))


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


def occurrence_grid(n_corpus: int) -> np.ndarray:
    """Document counts D to deconvolve over: every one up to 200, then geometric steps to the corpus size."""
    small = np.arange(1, min(n_corpus, 200) + 1)
    large = np.geomspace(201, n_corpus, 200).round() if n_corpus > 200 else np.array([])
    return np.unique(np.concatenate([small, large])).astype(int)


def merge_piles(per_merge: np.ndarray, merges: np.ndarray, threshold: int) -> Tuple[np.ndarray, np.ndarray]:
    """Over a key's first ``merges`` merges (keys x G) of ``per_merge`` fragments each (keys): (the fragments its
    description held after each merge, summed: what its embedded texts carry; the summaries made).

    A merge adds its fragments to the pile; a pile of ``threshold`` or more is summarized into one.
    """
    rates, key_rate = np.unique(np.asarray(per_merge, dtype=float), return_inverse=True)
    merges = np.asarray(merges, dtype=int)
    shape = (len(rates), int(merges.max(initial=0)) + 1)
    piles, summaries = np.zeros(shape), np.zeros(shape)
    pile = np.zeros(len(rates))
    for step in range(1, piles.shape[1]):
        pile = pile + rates
        full = pile >= threshold
        pile = np.where(full, 1.0, pile)
        piles[:, step] = piles[:, step - 1] + pile
        summaries[:, step] = summaries[:, step - 1] + full
    return (np.take_along_axis(piles[key_rate], merges, axis=1), np.take_along_axis(summaries[key_rate], merges, axis=1))


@dataclass
class KeyOccurrence:
    """The corpus's keys as the sample's seen keys stand for them: per seen key, its chunks per naming
    document and the weight of each document count D (posterior x 1 / P(seen | D))."""

    grid: np.ndarray
    per_doc: np.ndarray
    weights: np.ndarray
    """keys x grid: how many corpus keys with D = grid[j] documents each seen key stands for."""

    def total(self, per_key: np.ndarray) -> float:
        """The corpus total of a key quantity given as keys x grid."""
        return float((self.weights * per_key).sum())


def deconvolve(docs: np.ndarray, chunks: np.ndarray, n_sample: int, n_corpus: int) -> KeyOccurrence:
    """The corpus's key occurrence from the sample's seen keys (see the module docstring)."""
    from scipy.stats import hypergeom

    seen = docs > 0
    docs, chunks = docs[seen].round().astype(int), chunks[seen]
    if n_corpus <= n_sample:  # the sample is the corpus: each key is what it is
        return KeyOccurrence(docs[:, None] if len(docs) else np.zeros((0, 1), int), chunks / np.maximum(docs, 1),
                             np.ones((len(docs), 1)))
    grid = occurrence_grid(n_corpus)
    values, key_value = np.unique(docs, return_inverse=True)
    p_seen = 1 - hypergeom.pmf(0, n_corpus, grid, n_sample)
    likelihood = hypergeom.pmf(values[:, None], n_corpus, grid[None, :], n_sample) / p_seen  # P(d | D, seen)
    weight = np.bincount(key_value, minlength=len(values)).astype(float)
    mixture = np.full(len(grid), 1 / len(grid))
    for _ in range(EM_ITERATIONS):
        joint = mixture * likelihood
        mixture = weight @ (joint / joint.sum(axis=1, keepdims=True)) / weight.sum()
    joint = mixture * likelihood
    posterior = joint / joint.sum(axis=1, keepdims=True)  # per distinct d: P(D | d, seen)
    return KeyOccurrence(np.broadcast_to(grid, (len(docs), len(grid))), chunks / docs, posterior[key_value] / p_seen)


def corpus_summaries(keys: KeyOccurrence, threshold: int) -> float:
    """The summaries LightRAG's rule makes over the corpus's keys, merged document by document."""
    return keys.total(merge_piles(keys.per_doc, keys.grid, threshold)[1]) if len(keys.per_doc) else 0.0


def pile_excess(keys: KeyOccurrence, threshold: int) -> float:
    """Fragments re-embedded over the corpus beyond each merge's own: what recurring keys' growing
    descriptions add to the embedding work (a key merged once adds none, so unseen rare keys do not matter)."""
    if not len(keys.per_doc):
        return 0.0
    return keys.total(merge_piles(keys.per_doc, keys.grid, threshold)[0] - keys.grid * keys.per_doc[:, None])


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
    _memo: Dict[Tuple[Any, ...], Any] = field(default_factory=dict, repr=False, compare=False)
    """Estimates and key occurrences already made (a what-if table asks for the same corpus many times)."""

    def _within_sample(self, chunks: float, documents: int) -> bool:
        return documents <= len(self.units) or chunks <= float(self.units.sum()) or not self.counts.size

    def _occurrence(self, left_out: int, chunks: float) -> KeyOccurrence:
        """The deconvolved key occurrence of the sample without jackknife group ``left_out`` (-1: none), for a
        corpus of ``chunks``; the summaries and the merge work share it."""
        rows = self._rows(left_out)
        documents = self._corpus_documents(rows, chunks)
        key = ("keys", left_out, documents)
        if key not in self._memo:
            counts = self.counts[rows]
            self._memo[key] = deconvolve((counts > 0).sum(axis=0), counts.sum(axis=0), int(rows.sum()), documents)
        return self._memo[key]

    def _corpus_documents(self, rows: np.ndarray, chunks: float) -> int:
        """A corpus of ``chunks`` in documents of these sampled documents' mean size. Keys recur with the
        text: a corpus of larger documents than the sample's holds more of the sample's unit than its
        document count says (the dev corpus: 597 chunks in 38 documents; its stratified sample of 10 held 88)."""
        part = float(self.units[rows].sum())
        return max(int(rows.sum()), int(round(chunks * rows.sum() / part))) if part else int(rows.sum())

    def _rows(self, left_out: int) -> np.ndarray:
        return np.arange(len(self.units)) % JACKKNIFE_GROUPS != left_out

    def _estimate(self, of_sample: Callable[[int], float], value_how: str) -> Estimate:
        """``of_sample(left_out)`` on the sample (-1) with the jackknife interval over its documents
        (delete-a-group, at most ``JACKKNIFE_GROUPS`` groups).

        Not a bootstrap: a document drawn twice doubles every key it names, which is recurrence the corpus
        does not have, and biases the draws up.
        """
        value = of_sample(-1)
        groups = min(len(self.units), JACKKNIFE_GROUPS)
        if groups < 3:
            return Estimate(value, None, None, value_how + "; too few documents for an interval")
        draws = np.array([of_sample(g) for g in range(groups)])
        half = t_quantile(groups - 1) * math.sqrt((groups - 1) / groups * float(((draws - draws.mean()) ** 2).sum()))
        return Estimate(value, value - half, value + half, value_how + "; jackknife interval over the sampled documents")

    def _memoized(self, key: Tuple[Any, ...], make: Callable[[], Estimate]) -> Estimate:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def summaries(self, chunks: float, documents: int) -> Estimate:
        """Summary calls for a corpus of ``documents`` documents and ``chunks`` chunks."""
        return self._memoized(("summaries", float(chunks), int(documents)), lambda: self._summaries(chunks, documents))

    def _summaries(self, chunks: float, documents: int) -> Estimate:
        if self._within_sample(chunks, documents):
            x, y = self.curve  # within the sample: what its run measured there
            value = float(np.interp(chunks, x, y)) if len(x) else self.measured
            return exact(value, "merge summary calls: measured on the sample's growth curve")

        sample_chunks = float(self.units.sum())
        ruled = corpus_summaries(self._occurrence(-1, sample_chunks), self.threshold)  # the rule on the sample itself

        def of_sample(left_out: int) -> float:
            corpus = corpus_summaries(self._occurrence(left_out, chunks), self.threshold)
            return corpus * self.measured / ruled if ruled else self.measured + corpus

        scaled = (f"x the sample run's summaries over the rule's on the sample ({self.measured:.0f} / {ruled:.0f})"
                  if ruled else "+ the sample run's (the rule gives the sample none)")
        return self._estimate(of_sample, f"merge summary calls: LightRAG's rule (a key's fragments piled document by "
                                         f"document, summarized at {self.threshold}) on the corpus's key occurrence "
                                         f"deconvolved from the sample's, {scaled}")

    def work_ratio(self, chunks: float, documents: int) -> Estimate:
        """The corpus's merge work over the sample's: description fragments carried by every merge's embedded
        text (each merge's own, linear in chunks, plus what recurring keys' piles add)."""
        return self._memoized(("work", float(chunks), int(documents)), lambda: self._work_ratio(chunks, documents))

    def _work_ratio(self, chunks: float, documents: int) -> Estimate:
        sample_chunks = float(self.units.sum())
        if self._within_sample(chunks, documents):
            return exact(chunks / sample_chunks if sample_chunks else 1.0, "merge work: chunks over the sample's")

        def ratio(left_out: int) -> float:
            rows = self._rows(left_out)
            own, scale = float(self.counts[rows].sum()), chunks / float(self.units[rows].sum())
            sample = own + pile_excess(self._occurrence(left_out, float(self.units[rows].sum())), self.threshold)
            corpus = own * scale + pile_excess(self._occurrence(left_out, chunks), self.threshold)
            return corpus / sample if sample else scale

        return self._estimate(ratio, "merge work (description fragments embedded) of the corpus over the sample's: "
                                     "each merge's own by chunks, recurring keys' piles by their deconvolved occurrence")


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
