"""The ``ragopt`` command: profile, bench, report, compare, llm-sim serve.

Settings come from the environment (see ``ragopt.config``); the options here
only choose what to run and where to write. Keep the imports at the top light:
the parse and embedding worker processes of a ``ragopt`` command import this
module again as their ``__main__``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from ragopt.config import ConfigError, RagoptConfig
from ragopt.measure.workloads import SAMPLE_CORPUS, synthetic_corpus


def _corpus(args: argparse.Namespace) -> Path:
    """The sample corpus, a given folder, or N synthetic documents."""
    if getattr(args, "synthetic", None):
        folder = Path(tempfile.mkdtemp(prefix="ragopt-synthetic-"))
        synthetic_corpus(folder, args.synthetic, seed=args.seed)
        return folder
    return Path(args.corpus)


def cmd_profile(args: argparse.Namespace) -> int:
    from ragopt.backends import embedding_device
    from ragopt.backends.embedding import warm_up

    config = RagoptConfig.from_env()
    # The embedding worker loads torch and the model while this process imports RAG-Anything (set-up, not the run).
    warm_up(embedding_device(config))
    from ragopt.measure.experiments import profile

    run = profile(args.mode, _corpus(args), config, working_dir=args.working_dir)
    run.to_json(args.out)
    print(json.dumps(run.summary(), default=str))
    return 0


BENCHMARKS = ("baseline", "batch", "cache", "memory", "gpu")  # modules of ragopt.measure.bench


def cmd_bench(args: argparse.Namespace, rest: List[str]) -> int:
    """Run one benchmark of ``ragopt.measure.bench`` with the remaining arguments (each has --help)."""
    from importlib import import_module

    chosen = [name for name in BENCHMARKS if getattr(args, name)]
    if len(chosen) != 1:
        print(f"choose one benchmark: {' '.join('--' + name for name in BENCHMARKS)}", file=sys.stderr)
        return 2
    try:
        return int(import_module(f"ragopt.measure.bench.{chosen[0]}").main(rest) or 0)
    except SystemExit as done:  # argparse's --help and usage errors
        return int(done.code or 0)


def cmd_report(args: argparse.Namespace) -> int:
    from ragopt.ui.report import build_report

    parameters = {"corpus": str(Path(args.corpus).resolve()), "out_dir": str(Path(args.out_dir).resolve()), "progress": "lines"}
    parameters.update(json.loads(args.parameters or "{}"))
    html = build_report(args.notebook, args.out, parameters)
    print(f"report written to {html}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ragopt.measure.tables import before_after
    from ragopt.measure.run import Run

    before, after = Run.from_json(args.before), Run.from_json(args.after)
    if before.simulated or after.simulated:
        print("Figures measured on the SIMULATED LLM service.")
    print(before_after(before, after).to_string(index=False))
    return 0


def cmd_llm_sim_serve(args: argparse.Namespace) -> int:
    from ragopt.backends.llm_server import run_forever

    from ragopt.backends import simulator_for

    config = RagoptConfig.from_env()
    if args.preset:
        config = config.replace(sim_preset=args.preset)
    run_forever(simulator_for(config).config, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: spawned worker processes import this module again
    # (it is their __main__), and they must not pay for RAG-Anything and LightRAG.
    from ragopt.measure.experiments import MODES

    parser = argparse.ArgumentParser(prog="ragopt", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def corpus_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--corpus", default=str(SAMPLE_CORPUS), help="folder of documents (default: the committed sample)")
        p.add_argument("--synthetic", type=int, metavar="N", help="use N generated documents instead")
        p.add_argument("--seed", type=int, default=0)

    profile = commands.add_parser("profile", help="profile one RAG-Anything entry point and write its run record")
    profile.add_argument("--mode", required=True, choices=MODES)
    profile.add_argument("--out", required=True)
    profile.add_argument("--working-dir", help="RAG storage folder (default: a fresh temporary one)")
    corpus_options(profile)
    profile.set_defaults(func=cmd_profile)

    bench = commands.add_parser("bench", help="run a benchmark of benchmarks/; its last output line is one JSON object")
    for name in BENCHMARKS:
        bench.add_argument(f"--{name}", action="store_true", help=f"ragopt.measure.bench.{name} (further arguments go to it)")
    bench.set_defaults(func=cmd_bench, passthrough=True)

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
    args, rest = build_parser().parse_known_args(argv)
    if rest and not getattr(args, "passthrough", False):
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest) if getattr(args, "passthrough", False) else args.func(args)
    except ConfigError as exc:
        print(f"ragopt: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
