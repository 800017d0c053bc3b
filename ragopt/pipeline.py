"""A RAGAnything wired to the chosen backends.

``make_backends(config)`` picks the model functions: the in-process LLM
simulator by default, or a real OpenAI-compatible endpoint when
RAGOPT_LLM_BASE_URL is set; MiniLM embeddings and the offline tokenizer either
way. ``build_rag`` hands them to RAG-Anything with ragopt's offline parser, so
RAG-Anything's own entry points run unchanged on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from ragopt.backends import parser as offline_parser
from ragopt.backends.raganything_parser import register as register_offline_parser
from ragopt.backends.embedding import minilm_embedding_func
from ragopt.backends.tokenizer import offline_tokenizer
from ragopt.config import RagoptConfig
from ragopt.tuning import coalesce_flushes, prioritize_gleaning
from ragopt.writebehind import write_behind_vectors

# RAG-Anything's default list leaves out HTML, which the offline parser reads.
SUPPORTED_EXTENSIONS = sorted(offline_parser.SUPPORTED_SUFFIXES)


@dataclass
class Backends:
    """The model functions of one run and what they stand for."""

    llm_func: Callable
    vision_func: Callable
    embedding_func: Any  # lightrag.utils.EmbeddingFunc
    slots: int
    """Concurrent requests the LLM service serves: K in the LLM-bound limit."""
    description: str
    simulator: Any = None  # ragopt.backends.llm_sim.LLMSimulator when simulated

    @property
    def simulated(self) -> bool:
        return self.simulator is not None


def make_backends(config: RagoptConfig) -> Backends:
    """The simulator unless a real endpoint is configured; MiniLM embeddings."""
    embedding = minilm_embedding_func(device=config.embedding_device, batch_size=config.batch_size)
    if not config.uses_simulator:
        from ragopt.backends.openai_endpoint import endpoint_llm_func

        llm = endpoint_llm_func(config.llm_base_url, config.llm_api_key, config.llm_model)
        vision = endpoint_llm_func(config.llm_base_url, config.llm_api_key, config.vision_model or config.llm_model)
        return Backends(
            llm_func=llm,
            vision_func=vision,
            embedding_func=embedding,
            slots=config.max_concurrent_processing,
            description=f"endpoint {config.llm_base_url} model {config.llm_model}",
        )

    from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig, llm_func, vision_func

    overrides: Dict[str, Any] = {
        "seed": config.sim_seed,
        "rate_429": config.sim_rate_429,
        "rate_timeout": config.sim_rate_timeout,
        "rate_5xx": config.sim_rate_5xx,
    }
    if config.sim_slots is not None:
        overrides["slots"] = config.sim_slots
    sim_config = SimulatorConfig.preset(config.sim_preset, **overrides)
    simulator = LLMSimulator(sim_config)
    return Backends(
        llm_func=llm_func(simulator),
        vision_func=vision_func(simulator),
        embedding_func=embedding,
        slots=sim_config.slots,
        description=(
            f"SIMULATED LLM service (preset {config.sim_preset}, K={sim_config.slots}, "
            f"{sim_config.ttft_s:g} s + {sim_config.tpot_s * 1000:g} ms/token)"
        ),
        simulator=simulator,
    )


def _optimize(config: RagoptConfig, slots: int, llm: Callable, vision: Callable, embedding: Any, stats: Dict[str, Dict[str, int]]):
    """The model functions and LightRAG settings for the optimizations ``config`` switches on.

    None of them changes the work itself: the same chunks are extracted, with
    gleaning, and merged.
    """
    from ragopt.microbatch import micro_batched_embedding
    from ragopt.retry import AdaptiveLimit, retrying
    from ragopt.tuning import lightrag_settings

    settings: Dict[str, Any] = lightrag_settings(slots, config.batch_size) if config.tuned_concurrency else {}
    if config.llm_retries:
        limit = AdaptiveLimit(slots) if config.adaptive_concurrency else None
        llm = retrying(llm, stats=stats["retries"], limit=limit, seed=config.sim_seed)
        vision = retrying(vision, stats=stats["retries"], limit=limit, seed=config.sim_seed + 1)
    llm, vision = _counted(llm, stats["llm"]), _counted(vision, stats["llm"])
    if config.micro_batch_embeddings:
        embedding = micro_batched_embedding(embedding, config.batch_size, config.batch_timeout_s, stats["embedding_batches"])
    return llm, vision, embedding, settings


def _counted(func: Callable, counters: Dict[str, int]) -> Callable:
    """``func`` counting its calls and those in flight (for the progress bar)."""

    async def counted(*args: Any, **kwargs: Any):
        counters["calls"] += 1
        counters["in_flight"] += 1
        try:
            return await func(*args, **kwargs)
        finally:
            counters["in_flight"] -= 1

    return counted


def build_rag(
    config: RagoptConfig,
    working_dir: str | Path,
    backends: Optional[Backends] = None,
    recorder: Any = None,
    lightrag_kwargs: Optional[Dict[str, Any]] = None,
    optimized: bool = False,
):
    """A ``RAGAnything`` on ``working_dir`` using ``backends``.

    With a ``ragopt.metrics.Recorder`` the model functions are wrapped before
    RAG-Anything sees them (LightRAG copies them at start-up, so they cannot be
    swapped in later) and its callbacks are registered. LightRAG's own settings
    stay at their defaults unless ``lightrag_kwargs`` says otherwise: the
    baseline is RAG-Anything as shipped. With ``optimized=True`` (for
    ``ragopt.batch.ingest``) the optimizations the config switches on are
    applied: LLM retries, micro-batched embeddings, LightRAG tuned to the LLM's
    slots, coalesced flushes, write-behind vector storage; their counters are in ``rag.ragopt_stats``.
    """
    from raganything import RAGAnything, RAGAnythingConfig

    backends = backends or make_backends(config)
    working_dir = Path(working_dir)
    stats: Dict[str, Dict[str, int]] = {
        "retries": {}, "embedding_batches": {}, "flushes": {}, "vector_writes": {}, "llm": {"calls": 0, "in_flight": 0},
    }
    llm, vision, embedding = backends.llm_func, backends.vision_func, backends.embedding_func
    if recorder is not None:
        # Innermost, so it sees each request the service serves (every retry attempt)
        # and each call the embedding model makes (every micro-batch).
        llm, vision, embedding = recorder.wrap_llm(llm), recorder.wrap_llm(vision), recorder.wrap_embedding(embedding)
    settings: Dict[str, Any] = {}
    if optimized:
        llm, vision, embedding, settings = _optimize(config, backends.slots, llm, vision, embedding, stats)
    rag_config = RAGAnythingConfig(
        working_dir=str(working_dir),
        parser=register_offline_parser(),
        parser_output_dir=str(working_dir / "parsed"),
        parse_method="auto",
        display_content_stats=False,
        max_concurrent_files=config.max_concurrent_files,
        supported_file_extensions=SUPPORTED_EXTENSIONS,
    )
    settings.update(tokenizer=offline_tokenizer(), enable_llm_cache=config.enable_llm_cache)
    settings.update(lightrag_kwargs or {})
    rag = RAGAnything(
        config=rag_config,
        llm_model_func=llm,
        vision_model_func=vision,
        embedding_func=embedding,
        lightrag_kwargs=settings,
    )
    rag.ragopt_stats = stats
    if recorder is not None:
        recorder.observe(rag)
    if optimized and config.tuned_concurrency:
        after_initialization(rag, lambda: prioritize_gleaning(rag.lightrag))
    if optimized and config.coalesce_flushes:
        after_initialization(rag, lambda: coalesce_flushes(rag.lightrag, stats["flushes"]))
    if optimized and config.write_behind_vectors:
        after_initialization(rag, lambda: write_behind_vectors(rag.lightrag, stats["vector_writes"]))
    return rag


def after_initialization(rag: Any, hook: Callable[[], None]) -> None:
    """Run ``hook`` once, right after RAG-Anything creates its LightRAG (storages exist then)."""
    initialize = rag._ensure_lightrag_initialized
    done = []

    async def initialize_then_hook(*args: Any, **kwargs: Any):
        result = await initialize(*args, **kwargs)
        if rag.lightrag is not None and not done:
            done.append(True)
            hook()
        return result

    rag._ensure_lightrag_initialized = initialize_then_hook
