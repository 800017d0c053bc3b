"""The ``ragopt`` command: profile, bench, report, compare, plan, ledger, dashboard, worker, submit, jobs, llm-sim serve.

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

    run = profile(args.mode, _corpus(args), config, working_dir=args.working_dir, publisher=_live_page(config))
    run.to_json(args.out)
    print(json.dumps(run.summary(), default=str))
    return 0


BENCHMARKS = ("baseline", "batch", "cache", "memory", "gpu", "distributed", "query", "plan", "crash")  # modules of ragopt.measure.bench


def _live_page(config: RagoptConfig):
    """ENABLE_MONITORING: the live page this command's runs (and its child processes') publish to; else None."""
    if not config.enable_monitoring:
        return None
    from ragopt.ui.monitoring import publisher_for

    return publisher_for(config)


def cmd_bench(args: argparse.Namespace, rest: List[str]) -> int:
    """Run one benchmark of ``ragopt.measure.bench`` with the remaining arguments (each has --help)."""
    from importlib import import_module

    chosen = [name for name in BENCHMARKS if getattr(args, name)]
    if not chosen and {"-h", "--help"} & set(rest):
        print(f"usage: ragopt bench {{{' | '.join('--' + name for name in BENCHMARKS)}}} [its arguments, --help lists them]")
        return 0
    if len(chosen) != 1:
        print(f"choose one benchmark: {' '.join('--' + name for name in BENCHMARKS)}", file=sys.stderr)
        return 2
    _live_page(RagoptConfig.from_env())  # its isolated runs publish to the page this process serves
    try:
        return int(import_module(f"ragopt.measure.bench.{chosen[0]}").main(rest) or 0)
    except SystemExit as done:  # argparse's --help and usage errors
        return int(done.code or 0)


def cmd_report(args: argparse.Namespace) -> int:
    from ragopt.ui.report import build_report

    _live_page(RagoptConfig.from_env())  # the report's isolated runs publish to the page this process serves
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


def cmd_plan(args: argparse.Namespace) -> int:
    from ragopt.measure.planner import plan

    latency = tuple(float(v) for v in args.endpoint_latency.split(",")) if args.endpoint_latency else None
    planned = plan(_corpus(args), RagoptConfig.from_env(), sample=args.sample, slots=args.slots, preset=args.preset,
                   endpoint_latency=latency, prices=args.prices, work_dir=args.work_dir, isolated=args.isolated)
    print(planned.text())
    if args.out:
        Path(args.out).write_text(json.dumps(planned.to_dict(), indent=1, default=str))
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from ragopt.measure.run import Run

    print(Run.from_json(args.run).ledger(args.prices).text())
    return 0


def _parse_age_hours(text: str) -> float:
    """'72h', '7d', '30m' or hours as a number."""
    units = {"m": 1 / 60, "h": 1.0, "d": 24.0}
    text = text.strip().lower()
    return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)


def _parse_cache(args: argparse.Namespace):
    from ragopt.cache.content_cache import ContentCache, default_location

    return ContentCache(args.location or RagoptConfig.from_env().cache_storage or default_location())


def cmd_cache(args: argparse.Namespace) -> int:
    """``cache stats``: entries, bytes and where; ``cache prune``: drop old and least recently used entries."""
    from ragopt.cache.content_cache import ContentCache
    from ragopt.config import parse_cache_limit

    cache = _parse_cache(args)
    before = cache.stats()
    if args.cache_command == "prune":
        if not args.max_size and not args.older_than:
            print("ragopt cache prune: give --max-size and/or --older-than", file=sys.stderr)
            return 2
        limit = parse_cache_limit(args.max_size) if args.max_size else None
        pruner = ContentCache(cache.location, size_limit_bytes=limit.bytes if limit else None,
                              max_entries=limit.entries if limit else None,
                              ttl_hours=_parse_age_hours(args.older_than) if args.older_than else None)
        pruner.reduce_size()
        after = pruner.stats()
        print(f"{cache.location}: {before['entries']} -> {after['entries']} entries, "
              f"{before['bytes_stored'] / 2**20:.1f} -> {after['bytes_stored'] / 2**20:.1f} MB "
              f"({pruner.evictions} least recently used, {pruner.expirations} older than --older-than)")
        print(json.dumps({"location": str(cache.location), "before": before, "after": after}))
        return 0
    print(f"{cache.location}: {before['entries']} entries, {before['bytes_stored'] / 2**20:.1f} MB")
    print(json.dumps({"location": str(cache.location), **{k: before[k] for k in ("entries", "bytes_stored")}}))
    return 0


def cmd_llm_sim_serve(args: argparse.Namespace) -> int:
    from ragopt.backends.llm_server import run_forever

    from ragopt.backends import simulator_for

    config = RagoptConfig.from_env()
    if args.preset:
        config = config.replace(sim_preset=args.preset)
    run_forever(simulator_for(config).config, host=args.host, port=args.port)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from ragopt.distributed.worker import run_worker

    run_worker(args.queues.split(","), RagoptConfig.from_env(), args.concurrency, args.name, args.loglevel)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from ragopt.distributed.client import submit

    job = submit(args.corpus, args.kb, batch_size=args.batch_size)
    print(f"job {job.id} submitted for knowledge base {args.kb}")
    if not args.wait:
        return 0
    status = job.wait()
    for row in status["files"]:
        print(f"{row['status']:10} {row['file']}" + (f"  [{row['stage']}] {row['error']}" if row["error"] else ""))
    print(json.dumps({"job": job.id, "state": status["state"], **status["counts"]}))
    return 0 if status["state"] == "done" and not status["counts"]["failed"] else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    from ragopt.distributed.app import make_app
    from ragopt.distributed.client import Job, jobs

    if args.cancel:
        Job(args.cancel, make_app()).cancel()
        print(f"job {args.cancel}: cancel requested")
        return 0
    listed = jobs(limit=args.limit)
    print(f"{'job':34} {'kb':16} {'state':11} {'done':>5} {'failed':>6} {'pending':>7} {'total':>5}")
    for job in listed:
        print(f"{job['job']:34} {job['kb']:16} {job['state']:11} {job['done']:5} {job['failed']:6} {job['pending']:7} {job['total']:5}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    import time

    from ragopt.ui.dashboard import Dashboard

    config = RagoptConfig.from_env()
    dashboard = Dashboard(args.host, args.port or config.metrics_port, args.interval).start()
    print(f"ragopt live page on {dashboard.url} (Prometheus metrics at {dashboard.url}/metrics); "
          "runs with ENABLE_MONITORING=true and this METRICS_PORT publish here. Ctrl-C stops.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        dashboard.stop()
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

    # add_help=False: with a benchmark chosen, -h/--help goes on to that benchmark's own parser
    bench = commands.add_parser("bench", add_help=False, help="run a benchmark of benchmarks/; its last output line is one JSON object")
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

    worker = commands.add_parser("worker", help="a Celery worker for ragopt's parse, ingest or query queue")
    worker.add_argument("--queues", default="parse", help="parse (prefork pool), or ingest and/or query (threads pool)")
    worker.add_argument("--concurrency", type=int, help="processes (parse: default a core each) or threads (default 8)")
    worker.add_argument("--name", help="Celery node name (default ragopt-<queue>@<host>)")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)

    submit = commands.add_parser("submit", help="submit an ingest job for a knowledge base to the workers")
    submit.add_argument("corpus", help="a folder of documents")
    submit.add_argument("--kb", required=True, help="knowledge base name (a LightRAG workspace)")
    submit.add_argument("--batch-size", type=int, help="documents per batch (default BATCH_SIZE, else 20)")
    submit.add_argument("--wait", action="store_true", help="follow the job to its end and print each file's status")
    submit.set_defaults(func=cmd_submit)

    jobs = commands.add_parser("jobs", help="list ingest jobs (newest first), or cancel one")
    jobs.add_argument("--cancel", metavar="JOB", help="cancel this job: its running batch stops cleanly")
    jobs.add_argument("--limit", type=int, default=50)
    jobs.set_defaults(func=cmd_jobs)

    dashboard = commands.add_parser("dashboard", help="serve the live page and Prometheus /metrics that monitored runs publish to")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; another one only when named here)")
    dashboard.add_argument("--port", type=int, help="default METRICS_PORT")
    dashboard.add_argument("--interval", type=float, default=1.0, help="seconds between the page's updates")
    dashboard.set_defaults(func=cmd_dashboard)

    planner = commands.add_parser("plan", help="predict a corpus's time, calls and cost from a stratified sample (ragopt.plan)")
    planner.add_argument("corpus", nargs="?", default=str(SAMPLE_CORPUS), help="folder of documents (default: the committed sample)")
    planner.add_argument("--synthetic", type=int, metavar="N", help="plan N generated documents instead")
    planner.add_argument("--seed", type=int, default=0)
    planner.add_argument("--sample", type=int, metavar="N", help="documents to ingest (default: 10%% or at least 10)")
    planner.add_argument("--slots", type=int, metavar="K", help="LLM slots to predict for (default: MAX_CONCURRENT_PROCESSING)")
    planner.add_argument("--preset", help="simulator preset the sample runs on (default: RAGOPT_SIM_PRESET)")
    planner.add_argument("--endpoint-latency", metavar="TTFT,TPOT", help="predict for this latency (seconds, seconds per token)")
    planner.add_argument("--prices", help="price table, TOML or YAML (default: RAGOPT_PRICES)")
    planner.add_argument("--work-dir", help="where the scan, the sample and its runs go (default: a fresh temporary folder)")
    planner.add_argument("--isolated", action="store_true", help="each sample run in a fresh Python process")
    planner.add_argument("--out", help="also write the plan as JSON")
    planner.set_defaults(func=cmd_plan)

    ledger = commands.add_parser("ledger", help="tokens and cost of a run record, by kind, stage and document")
    ledger.add_argument("run", help="a run record (ragopt profile --out, a notebook's runs)")
    ledger.add_argument("--prices", help="price table, TOML or YAML (default: RAGOPT_PRICES)")
    ledger.set_defaults(func=cmd_ledger)

    cache = commands.add_parser("cache", help="the content-addressed parse cache: stats, prune")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    for name, text in (("stats", "entries and bytes of the cache"), ("prune", "remove old and least recently used entries")):
        sub = cache_commands.add_parser(name, help=text)
        sub.add_argument("--location", help="the cache folder (default: CACHE_STORAGE, else the user's cache directory)")
        if name == "prune":
            sub.add_argument("--max-size", help="keep at most this much: a size (500MB, 2GB) or a number of entries")
            sub.add_argument("--older-than", help="remove entries stored longer ago than this (72h, 7d, 30m)")
        sub.set_defaults(func=cmd_cache)

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
