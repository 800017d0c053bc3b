"""Baseline: RAG-Anything's own batch and folder entry points on one corpus.

Each mode runs in a fresh process with a fresh working dir and fresh backends.
Prints the summaries side by side; the last line is one JSON object with, per
mode, docs_per_min, wall_over_limit, llm_calls, simulator_llm_calls,
embedding_calls and embedding_texts.

    python benchmarks/bench_baseline.py [--corpus DIR | --synthetic N] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import List, Optional

from ragopt.config import RagoptConfig
from ragopt.measure.experiments import BASELINE_MODES, run_isolated
from ragopt.measure.tables import compare_runs, headline
from ragopt.measure.workloads import SAMPLE_CORPUS, synthetic_corpus


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="folder of documents (default: the committed sample)")
    parser.add_argument("--synthetic", type=int, metavar="N", help="use N generated documents instead")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="reports/runs")
    args = parser.parse_args(argv)

    corpus = Path(args.corpus)
    if args.synthetic:
        corpus = Path(tempfile.mkdtemp(prefix="ragopt-synthetic-"))
        synthetic_corpus(corpus, args.synthetic, seed=args.seed)
    out_dir = Path(args.out_dir)
    config = RagoptConfig.from_env()
    runs = [run_isolated(mode, corpus, out_dir / f"{mode}.json", config) for mode in BASELINE_MODES]
    if any(run.simulated for run in runs):
        print(f"Figures measured on the SIMULATED LLM service: {runs[0].meta['backend']}")
    print(f"corpus: {corpus}  run records: {out_dir}")
    print(compare_runs(runs).to_string())
    print(json.dumps({"corpus": str(corpus), **{run.label: headline(run) for run in runs}}, default=str))
    return 0
