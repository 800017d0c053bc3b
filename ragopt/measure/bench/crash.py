"""Crash benchmark: ``kill -9`` an ingestion at seeded random moments, rerun it each time, count the damage.

    ragopt bench --crash [--kills 10] [--seed 0] [--preset fast] [--synthetic N] [--scratch DIR]

1. Uninterrupted: the corpus (default the committed sample) is ingested in a
   child process (this module with ``--child``) into working dir W, which is
   then moved aside: RAG-Anything writes image paths under W into chunk text,
   so the run compared with must use the same path (``compare_graphs``).
2. Killed: the same into a fresh W, and the child is killed with SIGKILL
   (``os.kill``) at seeded random moments, each followed by a rerun into W.
   Every third kill is timed inside a flush: the child stops half way
   through its n-th storage-file write (n seeded) and says so, and the kill
   lands there. The others land a random delay after the child starts
   ingesting: in parsing, extraction, a merge, a flush or the multimodal
   stage. After each kill: storage files that no longer parse, and the
   processes the child had started (its session) still running 10 s later
   (the orphans; then ended). After the last kill, one rerun to the end.
3. Compared with the uninterrupted run: documents lost, duplicated and
   failed records (``doc_status_check``), the graph's entities and relations
   (``compare_graphs``), every relation's weight and every entity's and
   relation's source chunks (a document merged twice adds its weight twice),
   the stored chunks; and the LLM calls of all the killed runs and the last
   one beyond the uninterrupted run's (work the kills cost).

The parse cache is off: a cached document's images live under the cache's
folder and a parsed one's under the working dir, and RAG-Anything puts that
path into the chunk text the LLM reads. Prints a table of the kills, then as the last line one JSON
object. LLM figures come from the simulated LLM service unless
RAGOPT_LLM_BASE_URL names a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CHANNEL_ENV = "RAGOPT_CRASH_CHANNEL"  # the file descriptor a child reports on
ORPHAN_BOUND_S = 10.0  # the requirement: no worker outlives its killed parent by more than this
FLUSH_KILL_EVERY = 3
RUN_TIMEOUT_S = 1800.0


# --------------------------------------------------------------------------- in the child

def _tell(line: str) -> None:
    """One line to the parent; a pipe write under PIPE_BUF is atomic, so lines never interleave."""
    os.write(int(os.environ[CHANNEL_ENV]), (line + "\n").encode())


def _telling_events() -> Any:
    """A RAG-Anything callback passing on the name of every document event (the phase a kill lands in)."""
    from raganything.callbacks import ProcessingCallback

    def telling(event: str):
        return lambda self, *args, **kwargs: _tell(f"event {event}")

    names = {n for n in dir(ProcessingCallback) if n.startswith("on_")} | {"on_document_skipped"}  # ragopt's own
    return type("TellingEvents", (ProcessingCallback,), {n: telling(n[3:]) for n in names})()


def _telling_calls(func):
    async def told(*args, **kwargs):
        _tell("llm")
        return await func(*args, **kwargs)

    return told


def _writes_counted(stall_at: Optional[int]) -> List[int]:
    """Count storage-file writes; the ``stall_at``-th stops after its first chunk and says so."""
    from ragopt.compat import storage_files

    atomic_write, count = storage_files.atomic_write, [0]

    class Stalling:
        def __init__(self, file: Any, path: str):
            self.file, self.path = file, path

        def write(self, data: Any) -> Any:
            written = self.file.write(data)
            self.file.flush()
            _tell(f"stalled {self.path}")
            time.sleep(RUN_TIMEOUT_S)  # until the parent's kill
            return written

        def __getattr__(self, name: str) -> Any:
            return getattr(self.file, name)

    def counted(path: str, write: Any, binary: bool = False) -> None:
        count[0] += 1
        if count[0] == stall_at:
            return atomic_write(path, lambda file: write(Stalling(file, path)), binary)
        return atomic_write(path, write, binary)

    storage_files.atomic_write = counted
    return count


def child(working_dir: Path, corpus: Path, stall_at: Optional[int]) -> int:
    """One ingestion of ``corpus`` into ``working_dir`` with the config of the environment, reporting as it goes."""
    import asyncio
    import dataclasses
    import logging

    from ragopt.backends import make_backends
    from ragopt.config import RagoptConfig
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.workloads import corpus_files

    class Repairs(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            _tell(f"repaired {record.args[0]}")

    logging.getLogger("ragopt.engine.repair").addHandler(Repairs(logging.WARNING))
    writes = _writes_counted(stall_at)
    config = RagoptConfig.from_env()
    backends = make_backends(config)
    backends = dataclasses.replace(backends, llm_func=_telling_calls(backends.llm_func),
                                   vision_func=_telling_calls(backends.vision_func))
    rag = build_rag(config, working_dir, backends, optimized=True)
    rag.callback_manager.register(_telling_events())
    asyncio.run(backends.embedding_func.func(["warm-up"]))  # model loading is set-up, not the run
    _tell("ready")
    result = ingest(rag, corpus_files(corpus), config=config, progress=False)
    release_rag(rag)
    _tell("done " + json.dumps({"counts": result.counts(), "writes": writes[0]}))
    return 0


# --------------------------------------------------------------------------- in the parent

class ChildRun:
    """One child ingestion: its process, and what it has told so far (a reader thread collects it)."""

    def __init__(self, working_dir: Path, corpus: Path, env: Dict[str, str], log: Path, stall_at: Optional[int] = None):
        read_end, write_end = os.pipe()
        command = [sys.executable, "-m", "ragopt.measure.bench.crash", "--child", str(working_dir), "--corpus", str(corpus)]
        if stall_at is not None:
            command += ["--stall-at", str(stall_at)]
        with open(log, "ab") as out:
            # A session of its own: what it starts stays in it, found after the kill whenever it started.
            self.process = subprocess.Popen(command, env={**env, CHANNEL_ENV: str(write_end)}, pass_fds=(write_end,),
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(write_end)
        self.llm_calls, self.repaired, self.phase, self.done = 0, 0, "start-up", None
        self.events: List[str] = []
        self.said = {name: threading.Event() for name in ("ready", "stalled", "done")}
        self.said_at: Dict[str, float] = {}
        self.closed = threading.Event()
        threading.Thread(target=self._read, args=(read_end,), daemon=True).start()

    def _read(self, read_end: int) -> None:
        with os.fdopen(read_end, "r") as channel:
            for line in channel:
                word, _, rest = line.strip().partition(" ")
                if word == "llm":
                    self.llm_calls += 1
                elif word == "event":
                    self.phase = rest
                    self.events.append(rest)
                elif word == "repaired":
                    self.repaired += int(rest)
                elif word == "stalled":
                    self.phase = f"flush ({Path(rest).name})"
                elif word == "done":
                    self.done = json.loads(rest)
                if word in self.said:
                    self.said_at[word] = time.monotonic()
                    self.said[word].set()
        self.closed.set()  # every process holding the write end is gone

    def wait_for(self, word: str, timeout_s: float = RUN_TIMEOUT_S) -> bool:
        """True once the child has said ``word``; False if it ended (or the time ran out) first."""
        deadline = time.monotonic() + timeout_s
        while not self.said[word].wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return self.said[word].is_set()
        return True

    def finish(self) -> int:
        """Wait for it to exit on its own; its exit status."""
        code = self.process.wait(timeout=RUN_TIMEOUT_S)
        self.closed.wait(RUN_TIMEOUT_S)
        return code

    def kill(self) -> int:
        """SIGKILL the child (``os.kill``); returns how many processes it had started."""
        started = len(session_processes(self.process.pid)) - 1
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return started


def session_processes(session: int) -> List[Any]:
    """The running processes of a session (zombies are dead: they only wait to be reaped)."""
    import psutil

    members = []
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return members


def orphans(session: int, bound_s: float = ORPHAN_BOUND_S) -> int:
    """How many processes of a killed child's session still run ``bound_s`` after the kill (then ended)."""
    deadline = time.monotonic() + bound_s
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = session_processes(session)
    for process in left:
        process.kill()
    return len(left)


def kb_files(working_dir: Path) -> List[Path]:
    """LightRAG's default storage files in ``working_dir`` (or its workspace folder)."""
    return sorted(p for p in working_dir.rglob("*") if p.name.startswith(("kv_store_", "vdb_", "graph_"))
                  and p.suffix in (".json", ".graphml"))


def corrupt_files(working_dir: Path) -> List[str]:
    """The storage files of ``working_dir`` that do not parse (JSON stores, vector stores, GraphML)."""
    import networkx as nx

    bad = []
    for path in kb_files(working_dir):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            else:
                nx.read_graphml(path)
        except Exception:
            bad.append(path.name)
    return bad


def contributions(working_dir: Path) -> Tuple[Dict[str, FrozenSet[str]], Dict[FrozenSet[str], Tuple[float, FrozenSet[str]]]]:
    """(entity -> its source chunks, relation -> (weight, its source chunks)) of the graph in ``working_dir``."""
    import networkx as nx

    from ragopt.engine.repair import source_chunks
    from ragopt.measure.graphs import graph_file

    graph = nx.read_graphml(graph_file(working_dir))
    entities = {str(n): frozenset(source_chunks(d)) for n, d in graph.nodes(data=True)}
    relations = {frozenset((str(u), str(v))): (float(d.get("weight", 1.0)), frozenset(source_chunks(d)))
                 for u, v, d in graph.edges(data=True)}
    return entities, relations


def counted_once(a: Path, b: Path) -> Dict[str, Any]:
    """Entities and relations present in both graphs whose source chunks or weight differ, and the chunk stores."""
    entities_a, relations_a = contributions(a)
    entities_b, relations_b = contributions(b)
    entity_sources = sorted(n for n in entities_a.keys() & entities_b.keys() if entities_a[n] != entities_b[n])
    weights = sorted(" -- ".join(sorted(r)) for r in relations_a.keys() & relations_b.keys()
                     if relations_a[r][0] != relations_b[r][0])
    relation_sources = sorted(" -- ".join(sorted(r)) for r in relations_a.keys() & relations_b.keys()
                              if relations_a[r][1] != relations_b[r][1])

    def chunks(working_dir: Path) -> Tuple[int, int]:
        text = json.loads((working_dir / "kv_store_text_chunks.json").read_text(encoding="utf-8"))
        vectors = json.loads((working_dir / "vdb_chunks.json").read_text(encoding="utf-8"))
        return len(text), len(vectors.get("data", []))

    return {
        "weight_mismatches": len(weights),
        "entity_source_mismatches": len(entity_sources),
        "relation_source_mismatches": len(relation_sources),
        "examples": (weights + entity_sources + relation_sources)[:5],
        "chunks_uninterrupted": chunks(a),
        "chunks_killed": chunks(b),
    }


def _run_to_end(working_dir: Path, corpus: Path, env: Dict[str, str], log: Path) -> ChildRun:
    run = ChildRun(working_dir, corpus, env, log)
    code = run.finish()
    if code != 0 or run.done is None:
        raise RuntimeError(f"the ingestion into {working_dir} failed (exit {code}); its log: {log}")
    return run


def crash_trial(corpus: Path, scratch: Path, config: Any, kills: int, seed: int,
                progress: Any = lambda message: None) -> Dict[str, Any]:
    """Every figure of the benchmark (module docstring) for ``kills`` kills, in folders under ``scratch``."""
    from ragopt.measure.graphs import compare_graphs
    from ragopt.measure.integrity import inspect_knowledge_base
    from ragopt.measure.workloads import corpus_files

    scratch.mkdir(parents=True, exist_ok=True)
    working_dir, uninterrupted_dir, logs = scratch / "kb", scratch / "kb-uninterrupted", scratch / "logs"
    logs.mkdir(exist_ok=True)
    for folder in (working_dir, uninterrupted_dir):
        shutil.rmtree(folder, ignore_errors=True)

    # No parse cache: a cached document's images live under the cache's folder, a parsed one's under
    # the working dir, and the image path is in the chunk text the LLM reads (so in entity names).
    env = {**os.environ, **config.replace(enable_parse_cache=False).to_env(), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    progress("uninterrupted run")
    baseline = _run_to_end(working_dir, corpus, env, logs / "uninterrupted.log")
    baseline_s = baseline.said_at["done"] - baseline.said_at["ready"]  # the ingestion, without start-up
    working_dir.rename(uninterrupted_dir)
    writes = max(1, baseline.done["writes"])

    rng = random.Random(seed)
    records: List[Dict[str, Any]] = []
    llm_calls = 0
    for number in range(1, kills + 1):
        in_flush = number % FLUSH_KILL_EVERY == 0
        # Each kill lands within 1/kills of an uninterrupted run's work (time or storage writes), so together
        # they land before the corpus is done: a rerun redoes work, it never skips any.
        stall_at = rng.randint(1, max(1, writes // kills)) if in_flush else None
        delay_s = None if in_flush else rng.uniform(0.0, baseline_s / kills)
        log = logs / f"run-{number:02d}.log"
        run = ChildRun(working_dir, corpus, env, log, stall_at=stall_at)
        if in_flush:
            landed = run.wait_for("stalled")
        else:
            landed = run.wait_for("ready") and not run.said["done"].wait(delay_s)
        if not landed or run.process.poll() is not None:  # it finished before the kill: nothing more to kill
            if run.finish() != 0:
                raise RuntimeError(f"the ingestion into {working_dir} failed on its own; its log: {log}")
            llm_calls += run.llm_calls
            progress(f"run {number} finished before its kill")
            break
        started = run.kill()
        left = orphans(run.process.pid)
        run.closed.wait(ORPHAN_BOUND_S)
        llm_calls += run.llm_calls
        records.append({
            "kill": number, "when": f"write {stall_at}" if in_flush else f"{delay_s:.2f} s", "phase": run.phase,
            "repaired_at_start": run.repaired, "llm_calls": run.llm_calls,
            "processes_it_had_started": started, "orphans": left,
            "corrupt_files": corrupt_files(working_dir),
            "temporary_files": len(list(working_dir.rglob("*.tmp"))),
        })
        progress(f"kill {number}: {records[-1]['when']} ({records[-1]['phase']})")
    progress("rerun to the end")
    last = _run_to_end(working_dir, corpus, env, logs / "final.log")
    llm_calls += last.llm_calls

    files = corpus_files(corpus)
    uninterrupted, killed = (inspect_knowledge_base(config, kb, files) for kb in (uninterrupted_dir, working_dir))
    graph = compare_graphs(uninterrupted["graph"], killed["graph"])
    once = counted_once(uninterrupted_dir, working_dir)
    return {
        "kills": len(records),
        "kills_in_flushes": sum(1 for r in records if r["when"].startswith("write")),
        "documents": len(files),
        "lost_docs": killed["lost_docs"],
        "duplicate_docs": killed["duplicate_docs"],
        "failed_records": killed["failed_records"],
        "processed_without_chunks": killed["missing_chunks"],
        "corrupt_files": sum(len(r["corrupt_files"]) for r in records),
        "orphan_processes": sum(r["orphans"] for r in records),
        "same_graph": graph["same"],
        "weights_or_sources_counted_twice": once["weight_mismatches"] + once["entity_source_mismatches"]
        + once["relation_source_mismatches"],
        "same_chunks": once["chunks_uninterrupted"] == once["chunks_killed"],
        "repaired_documents": sum(r["repaired_at_start"] for r in records) + last.repaired,
        "llm_calls_uninterrupted": baseline.llm_calls,
        "llm_calls_killed": llm_calls,
        "extra_llm_calls": llm_calls - baseline.llm_calls,
        "final_run": last.done["counts"],
        "graph": graph,
        "counted_once": once,
        "kill_records": records,
        "uninterrupted_ingest_s": round(baseline_s, 2),
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default=None, help="simulator preset (default: RAGOPT_SIM_PRESET or 'default')")
    parser.add_argument("--corpus", default=None, help="folder of documents (default: the committed sample)")
    parser.add_argument("--synthetic", type=int, default=0, help="N generated documents instead of the corpus")
    parser.add_argument("--scratch", default=None, help="folder for working dirs, caches and logs (default: a temp dir)")
    parser.add_argument("--child", metavar="WORKING_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--stall-at", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(Path(args.child), Path(args.corpus), args.stall_at)
    import logging

    for name in ("lightrag", "raganything", "nano-vectordb"):
        logging.getLogger(name).setLevel(logging.WARNING)

    from ragopt.config import RagoptConfig
    from ragopt.measure.workloads import SAMPLE_CORPUS, synthetic_corpus

    config = RagoptConfig.from_env(**({"sim_preset": args.preset} if args.preset else {}))
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="ragopt-bench-crash-"))
    corpus = Path(args.corpus or SAMPLE_CORPUS)
    if args.synthetic:
        corpus = scratch / "synthetic"
        synthetic_corpus(corpus, args.synthetic, seed=args.seed)
    result = crash_trial(corpus, scratch, config, args.kills, args.seed, progress=lambda m: print(m, flush=True))

    import pandas as pd

    from ragopt.backends import make_backends

    backends = make_backends(config)
    print(f"\ncorpus: {corpus} ({result['documents']} documents)  scratch: {scratch}")
    print(f"LLM figures come from the {'SIMULATED LLM service' if backends.simulated else 'LLM endpoint'}: "
          f"{backends.description}")
    print(pd.DataFrame(result["kill_records"]).to_string(index=False))
    line = {k: v for k, v in result.items() if k not in ("kill_records", "graph", "counted_once")}
    line.update(simulated_llm=backends.simulated, llm_backend=backends.description)
    print(json.dumps(line, default=str))
    failed = (result["lost_docs"] or result["duplicate_docs"] or result["failed_records"] or result["corrupt_files"]
              or result["orphan_processes"] or not result["same_graph"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
