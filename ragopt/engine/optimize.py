"""``optimize(rag)``: ragopt's registered optimizations installed into a RAGAnything the user built.

Model-function layers and LightRAG settings must be in place before
RAG-Anything creates its LightRAG; patches of the live storages and queue
are installed right after it does (or at once, if it already has). Called on
an instance whose LightRAG already exists, ``optimize`` installs what it
still can and warns once, naming each optimization it could not install.
A second call installs nothing twice.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterable, Optional

from ragopt.backends import DEFAULT_ENDPOINT_SLOTS
from ragopt.compat.raganything import after_initialization, is_initialized
from ragopt.compat.storage_files import protect_storage_files
from ragopt.config import RagoptConfig
from ragopt.engine.observe import observation
from ragopt.engine.registry import BEFORE_INIT, Target, optimizations


ADAPTIVE_CEILING = 64  # where AIMD concurrency starts when the endpoint's K is not known


class OptimizationWarning(UserWarning):
    """An optimization could not be installed (named in the message)."""


def _counted(func: Callable, counters: Dict[str, int]) -> Callable:
    """``func`` counting its calls and those in flight (the progress bar shows them)."""

    async def counted(*args: Any, **kwargs: Any):
        counters["calls"] += 1
        counters["in_flight"] += 1
        try:
            return await func(*args, **kwargs)
        finally:
            counters["in_flight"] -= 1

    return counted


def optimize(
    rag: Any,
    config: Optional[RagoptConfig] = None,
    *,
    exclude: Iterable[str] = (),
    slots: Optional[int] = None,
) -> Any:
    """Install the optimizations ``config`` switches on into ``rag`` and return it.

    ``config`` defaults to ``RagoptConfig.from_env()``; ``exclude`` names
    optimizations to leave out (see ``ragopt.engine.registry.optimizations()``);
    ``slots`` is K, the LLM's concurrent slots (default: the config's
    MAX_CONCURRENT_PROCESSING, else 8). Counters are in ``rag.ragopt_stats``
    by optimization name; ``rag.ragopt_stats["llm"]`` counts LLM calls and
    those in flight.
    """
    config = config or RagoptConfig.from_env()
    protect_storage_files()  # whatever is switched on: atomic storage files, clear errors on a corrupt one
    registry = optimizations()
    unknown = set(exclude) - set(registry)
    if unknown:
        raise ValueError(f"unknown optimizations {sorted(unknown)}; known: {sorted(registry)}")
    # No K given and AIMD on: start high and let the endpoint's 429s find a working K.
    slots = slots or config.max_concurrent_processing or (ADAPTIVE_CEILING if config.adaptive_concurrency else DEFAULT_ENDPOINT_SLOTS)
    stats = getattr(rag, "ragopt_stats", None)
    if stats is None:
        stats = rag.ragopt_stats = {"llm": {"calls": 0, "in_flight": 0}}
    installed = rag.__dict__.setdefault("ragopt_installed", set())
    wanted = [o for name, o in registry.items() if name not in exclude and name not in installed and o.on_in(config)]
    initialized = is_initialized(rag)
    if not initialized:
        observation(rag)  # innermost of every layer, so a Recorder attached later still sees each attempt
    if not initialized and "counted" not in installed:
        installed.add("counted")
        rag.llm_model_func = _counted(rag.llm_model_func, stats["llm"])
    late, pending = [], []
    for optimization in wanted:
        target = Target(rag=rag, config=config, slots=slots, stats=stats.setdefault(optimization.name, {}))
        if optimization.when == BEFORE_INIT and initialized:
            late.append(optimization.name)
            continue
        if optimization.when == BEFORE_INIT or initialized:
            optimization.install(target)
        else:
            pending.append((optimization, target))
        installed.add(optimization.name)
    if pending:  # one hook, run once LightRAG exists: the patches go in registry order
        after_initialization(rag, lambda: [o.install(t) for o, t in pending])
    if late:
        warnings.warn(
            "LightRAG is already initialized, so these optimizations were not installed: "
            f"{', '.join(late)}. Call ragopt.optimize before the first ingestion or query.",
            OptimizationWarning,
            stacklevel=2,
        )
    return rag
