"""The capacity planner: how long a corpus will take and what it will cost, from a small sample.

``plan(corpus)`` / ``aplan``:

1. scans the whole corpus (``corpus_scan``: parsed through the parse cache,
   so a later ingest reuses the parses; chunked as LightRAG chunks);
2. draws a stratified sample (``sampling``: by format and size; 10% or at
   least 10 documents) and ingests it twice, each run profiled in a fresh
   working dir: with ragopt on the chosen backends, and with RAG-Anything as
   shipped (``process_folder_complete``), so each one's pace is measured;
3. fits the model on the two runs' ledgers (``plan_model``) and predicts the
   whole corpus (``plan_prediction``): calls and tokens by kind, cost, wall
   time of each mode with the stage that bounds it, and what more LLM slots
   or parse workers would change.

Every predicted figure carries a 95% interval from the sample's variance;
figures fitted on the simulated LLM say so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pandas as pd

from ragopt.aio import blocking
from ragopt.cache.content_cache import ContentCache
from ragopt.config import RagoptConfig
from ragopt.measure.corpus_scan import ascan
from ragopt.measure.ledger import Prices
from ragopt.measure.plan_model import Latency, PlanModel, embeds_on_this_cpu, fit
from ragopt.measure.plan_prediction import Prediction, what_if
from ragopt.measure.run import Run
from ragopt.measure.sampling import stratified_sample
from ragopt.measure.workloads import corpus_files

SAMPLE_MODES = ("ragopt", "rag_folder")  # the chosen backends with ragopt, and RAG-Anything as shipped
SCAN_RECORD, SAMPLE_RECORD = "scan.json", "sample.json"  # kept in the work dir, so ``refit`` can plan again


@dataclass
class Plan:
    """A corpus's scan, its sample and their runs, the fitted model and its prediction."""

    corpus: Path
    scan: pd.DataFrame
    sample: List[str]
    runs: Dict[str, Run]
    model: PlanModel
    prediction: Prediction
    work_dir: Path
    seconds: Dict[str, float]
    """How long the planner's own steps took (scan, each sample run, fit): measured."""

    def predict(self, slots: Optional[int] = None, latency: "Latency | str | None" = None,
                parse_workers: Optional[int] = None, prices: "Prices | str | Path | None" = None) -> Prediction:
        """The same corpus under other settings: K slots, a latency (a simulator preset's name, or a ``Latency``),
        parse workers, a price table."""
        return self.model.predict(self.scan, slots=slots, latency=latency, parse_workers=parse_workers,
                                  prices=Prices.resolve(prices) if prices is not None else self.prediction.prices)

    def what_if(self, slots: Sequence[int] = (), parse_workers: Sequence[int] = ()) -> pd.DataFrame:
        """ragopt's predicted wall time as LLM slots and parse workers grow (default: 1/2x, 1x, 2x, 4x each)."""
        base = self.prediction
        slots = list(slots) or sorted({max(1, base.slots // 2), base.slots, 2 * base.slots, 4 * base.slots})
        workers = list(parse_workers) or sorted({max(1, base.parse_workers // 2), base.parse_workers, 2 * base.parse_workers,
                                                 4 * base.parse_workers})
        return what_if(self.model, self.scan, slots, workers, base.latency, base.prices)

    def text(self) -> str:
        sample_docs = len(self.sample)
        lines = [f"corpus: {self.corpus} ({len(self.scan)} documents; sample of {sample_docs}, stratified by format and size)",
                 "planner steps (measured): " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()),
                 "", self.prediction.text(), "", "what if (predicted ragopt wall time, s):",
                 self.what_if().pivot(index="slots", columns="parse_workers", values="wall_s").round(1).to_string()]
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        return {"corpus": str(self.corpus), "documents": len(self.scan), "sample": self.sample,
                "sample_runs": {mode: run.summary() for mode, run in self.runs.items()}, "planner_seconds": self.seconds,
                **self.prediction.to_dict()}


def _copy_sample(files: List[str], corpus: Path, folder: Path) -> Dict[str, str]:
    """Copy the sampled files into ``folder`` (keeping their paths under the corpus); copy -> corpus file."""
    copies = {}
    for original in map(Path, files):
        try:
            relative = original.resolve().relative_to(corpus.resolve())
        except ValueError:
            relative = Path(original.name)
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original, target)
        copies[str(target)] = str(original)
    return copies


def run_file_map(run: Run, copies: Dict[str, str]) -> Dict[str, str]:
    """Each file the run names (full path or bare name, as the mode records it) -> its corpus file."""
    by_name = {Path(copy).name: original for copy, original in copies.items()}
    return {str(f): copies.get(str(f)) or by_name.get(Path(str(f)).name, str(f)) for f in run.docs["file"]}


async def _sample_run(mode: str, folder: Path, config: RagoptConfig, work: Path, isolated: bool) -> Run:
    from ragopt.measure.experiments import aprofile, run_isolated

    if isolated:
        return run_isolated(mode, folder, work / f"{mode}.json", config, working_dir=work / mode)
    run = await aprofile(mode, folder, config, working_dir=work / mode)
    run.to_json(work / f"{mode}.json")
    return run


async def aplan(
    corpus: str | Path,
    config: Optional[RagoptConfig] = None,
    sample: Optional[int] = None,
    slots: Optional[int] = None,
    preset: Optional[str] = None,
    endpoint_latency: Optional[Tuple[float, float]] = None,
    prices: "Prices | str | Path | None" = None,
    cache: Optional[ContentCache] = None,
    work_dir: Optional[str | Path] = None,
    isolated: bool = False,
    seed: int = 0,
) -> Plan:
    """Plan the ingestion of ``corpus`` (a folder).

    ``sample``: documents to ingest (default max(10%, 10)); ``slots``: K to
    predict for (default the config's); ``preset``: the simulator preset the
    sample runs on (default the config's); ``endpoint_latency``: (ttft s,
    tpot s) to predict for instead of the latency fitted on the sample (a
    real endpoint's, say); ``prices``: a ``Prices`` table or file (default
    RAGOPT_PRICES); ``cache``: the parse cache the scan fills (default the
    config's); ``isolated``: each sample run in a fresh Python process.
    """
    config = config or RagoptConfig.from_env()
    if preset:
        config = config.replace(sim_preset=preset)
    corpus = Path(corpus)
    work = Path(work_dir or tempfile.mkdtemp(prefix="ragopt-plan-"))
    work.mkdir(parents=True, exist_ok=True)
    seconds: Dict[str, float] = {}
    started = time.perf_counter()
    scan = await ascan(corpus_files(corpus), config, cache=cache, output_dir=work / "scan")
    seconds["scan"] = time.perf_counter() - started
    chosen = stratified_sample(scan, sample, seed=seed)
    copies = _copy_sample(chosen, corpus, work / "sample")
    # Sample runs parse afresh (their own cache in their working dir), as a real ingest of new documents would.
    run_config = config.replace(cache_storage=None)
    runs: Dict[str, Run] = {}
    for mode in SAMPLE_MODES:
        started = time.perf_counter()
        runs[mode] = await _sample_run(mode, work / "sample", run_config, work / "runs", isolated)
        seconds[f"sample run {mode}"] = time.perf_counter() - started
    scan.to_json(work / SCAN_RECORD, orient="records")
    (work / SAMPLE_RECORD).write_text(json.dumps({"sample": chosen, "copies": copies, "seconds": seconds}))
    return _fitted(corpus, scan, chosen, copies, runs, work, seconds, config, slots, endpoint_latency, prices)


def _fitted(corpus: Path, scan: pd.DataFrame, chosen: List[str], copies: Dict[str, str], runs: Dict[str, Run], work: Path,
            seconds: Dict[str, float], config: RagoptConfig, slots: Optional[int], endpoint_latency: Optional[Tuple[float, float]],
            prices: "Prices | str | Path | None") -> Plan:
    started = time.perf_counter()
    sample_scan = scan[scan["file"].isin(chosen)]
    model = fit(sample_scan, runs, {mode: run_file_map(run, copies) for mode, run in runs.items()},
                parse_workers=config.worker_pool_size, embeds_on_cpu=embeds_on_this_cpu(config))
    latency = Latency(*endpoint_latency, source="given") if endpoint_latency else None
    prediction = model.predict(scan, slots=slots, latency=latency, parse_workers=config.worker_pool_size,
                               prices=Prices.resolve(prices) if prices is not None else Prices.from_config(config))
    seconds["fit"] = time.perf_counter() - started
    return Plan(corpus, scan, chosen, runs, model, prediction, work, seconds)


plan = blocking(aplan)


def refit(work_dir: str | Path, corpus: str | Path, config: Optional[RagoptConfig] = None, slots: Optional[int] = None,
          endpoint_latency: Optional[Tuple[float, float]] = None, prices: "Prices | str | Path | None" = None) -> Plan:
    """A plan made again from an earlier plan's records in ``work_dir`` (its scan, sample and sample runs),
    without scanning or ingesting anything: the same measurements through the current model."""
    work = Path(work_dir)
    scan = pd.read_json(work / SCAN_RECORD, orient="records", convert_dates=False)
    record = json.loads((work / SAMPLE_RECORD).read_text())
    runs = {mode: Run.from_json(work / "runs" / f"{mode}.json") for mode in SAMPLE_MODES}
    return _fitted(Path(corpus), scan, record["sample"], record["copies"], runs, work, dict(record["seconds"]),
                   config or RagoptConfig.from_env(), slots, endpoint_latency, prices)
