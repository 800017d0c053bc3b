"""The ``ragopt`` command: profile, bench, report, compare, llm-sim serve.

Settings come from the environment (see ``ragopt.config``); the options here
only choose what to run and where to write.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from ragopt.config import ConfigError, RagoptConfig
from ragopt.workloads import SAMPLE_CORPUS, synthetic_corpus


def _corpus(args: argparse.Namespace) -> Path:
    """The sample corpus, a given folder, or N synthetic documents."""
    if getattr(args, "synthetic", None):
        folder = Path(tempfile.mkdtemp(prefix="ragopt-synthetic-"))
        synthetic_corpus(folder, args.synthetic, seed=args.seed)
        return folder
    return Path(args.corpus)


def cmd_profile(args: argparse.Namespace) -> int:
    from ragopt.experiments import profile

    run = profile(args.mode, _corpus(args), RagoptConfig.from_env())
    run.to_json(args.out)
    print(json.dumps(run.summary(), default=str))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ragopt.experiments import BASELINE_MODES, compare_runs, headline, run_isolated

    if not args.baseline:
        print("choose what to benchmark: --baseline (see benchmarks/ for the others)", file=sys.stderr)
        return 2
    corpus = _corpus(args)
    out_dir = Path(args.out_dir)
    config = RagoptConfig.from_env()
    runs = [run_isolated(mode, corpus, out_dir / f"{mode}.json", config) for mode in BASELINE_MODES]
    if any(run.simulated for run in runs):
        print(f"Figures measured on the SIMULATED LLM service: {runs[0].meta['backend']}")
    print(f"corpus: {corpus}  run records: {out_dir}")
    print(compare_runs(runs).to_string())
    print(json.dumps({"corpus": str(corpus), **{run.label: headline(run) for run in runs}}, default=str))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ragopt.report import build_report

    parameters = {"corpus": str(Path(args.corpus).resolve()), "out_dir": str(Path(args.out_dir).resolve())}
    parameters.update(json.loads(args.parameters or "{}"))
    html = build_report(args.notebook, args.out, parameters)
    print(f"report written to {html}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ragopt.experiments import before_after
    from ragopt.metrics import Run

    before, after = Run.from_json(args.before), Run.from_json(args.after)
    if before.simulated or after.simulated:
        print("Figures measured on the SIMULATED LLM service.")
    print(before_after(before, after).to_string(index=False))
    return 0


def cmd_llm_sim_serve(args: argparse.Namespace) -> int:
    from ragopt.backends.llm_server import run_forever
    from ragopt.backends.llm_sim import SimulatorConfig

    config = RagoptConfig.from_env()
    overrides = {"seed": config.sim_seed, "rate_429": config.sim_rate_429, "rate_timeout": config.sim_rate_timeout, "rate_5xx": config.sim_rate_5xx}
    if config.sim_slots:
        overrides["slots"] = config.sim_slots
    run_forever(SimulatorConfig.preset(args.preset or config.sim_preset, **overrides), host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragopt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def corpus_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="folder of documents (default: the committed sample)")
        p.add_argument("--synthetic", type=int, metavar="N", help="use N generated documents instead")
        p.add_argument("--seed", type=int, default=0)

    profile = commands.add_parser("profile", help="profile one RAG-Anything entry point and write its run record")
    profile.add_argument("--mode", required=True, choices=["rag_batch", "rag_folder", "ragopt"])
    profile.add_argument("--out", required=True)
    corpus_options(profile)
    profile.set_defaults(func=cmd_profile)

    bench = commands.add_parser("bench", help="benchmarks; the last output line is one JSON object")
    bench.add_argument("--baseline", action="store_true", help="RAG-Anything's batch and folder modes")
    bench.add_argument("--out-dir", default="reports/runs")
    corpus_options(bench)
    bench.set_defaults(func=cmd_bench)

    report = commands.add_parser("report", help="execute a notebook with papermill and export HTML")
    report.add_argument("--notebook", default="06_ablation_report")
    report.add_argument("--out", default="reports/report.html")
    report.add_argument("--out-dir", default="reports/runs", help="where the notebook writes its run records")
    report.add_argument("--corpus", default=str(SAMPLE_CORPUS))
    report.add_argument("--parameters", help="JSON object of further notebook parameters")
    report.set_defaults(func=cmd_report)

    compare = commands.add_parser("compare", help="before/after table of two run records")
    compare.add_argument("before")
    compare.add_argument("after")
    compare.set_defaults(func=cmd_compare)

    sim = commands.add_parser("llm-sim", help="the simulated LLM service")
    sim_commands = sim.add_subparsers(dest="sim_command", required=True)
    serve = sim_commands.add_parser("serve", help="serve it as an OpenAI-compatible endpoint on loopback")
    serve.add_argument("--port", type=int, default=8800)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--preset", help="default, hosted, vllm or fast (default: RAGOPT_SIM_PRESET)")
    serve.set_defaults(func=cmd_llm_sim_serve)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ragopt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
