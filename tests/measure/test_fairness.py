"""The benchmark's fairness claims as tests: ragopt does the same work and builds the same graph as
RAG-Anything's serial entry point, and two tiny graphs are never called "the same"."""

from __future__ import annotations

import shutil

import pytest

from ragopt.config import RagoptConfig
from ragopt.measure.bench.batch import ok_calls_by_kind
from ragopt.measure.experiments import profile
from ragopt.measure.graphs import compare_graphs, graph_signature
from ragopt.measure.workloads import synthetic_corpus

FAST = RagoptConfig(sim_preset="fast")
pytestmark = pytest.mark.slow  # whole ingestions, two per module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """rag_batch and ragopt on the same 3 documents, each in the same working-dir path in turn."""
    corpus = tmp_path_factory.mktemp("corpus")
    synthetic_corpus(corpus, 3, seed=7)
    path = tmp_path_factory.mktemp("kb") / "run"
    out = {}
    for mode in ("rag_batch", "ragopt"):
        run = profile(mode, corpus, FAST, working_dir=path)
        kept = path.with_name(mode)
        shutil.move(str(path), kept)
        out[mode] = (run, graph_signature(kept))
    return out


def test_ragopt_builds_the_same_entities_and_relations_as_rag_batch(runs):
    (_, serial), (_, ours) = runs["rag_batch"], runs["ragopt"]
    comparison = compare_graphs(serial, ours)
    assert comparison["entities_a"] >= 20 and comparison["relations_a"] > 0
    assert comparison["comparable"] and comparison["same"], comparison


def test_ragopt_makes_the_same_extract_and_glean_calls(runs):
    serial, ours = ok_calls_by_kind(runs["rag_batch"][0]), ok_calls_by_kind(runs["ragopt"][0])
    assert serial["extract"] > 0 and serial["glean"] > 0
    assert (ours["extract"], ours["glean"]) == (serial["extract"], serial["glean"])


def test_same_graph_refuses_empty_and_near_empty_graphs():
    empty = (set(), set())
    assert compare_graphs(empty, empty)["same"] is False
    few = ({"A", "B"}, {frozenset(("A", "B"))})
    assert compare_graphs(few, few)["same"] is False and compare_graphs(few, few)["comparable"] is False
    names = {f"entity {i}" for i in range(25)}
    enough = (names, {frozenset(("entity 0", "entity 1"))})
    assert compare_graphs(enough, enough)["same"] is True
    assert compare_graphs(enough, (names, set()))["same"] is False  # no relations: nothing to compare
