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
from ragopt.backends.embedding import minilm_embedding_func
from ragopt.backends.tokenizer import offline_tokenizer
from ragopt.config import RagoptConfig

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


def build_rag(
    config: RagoptConfig,
    working_dir: str | Path,
    backends: Optional[Backends] = None,
    recorder: Any = None,
    lightrag_kwargs: Optional[Dict[str, Any]] = None,
):
    """A ``RAGAnything`` on ``working_dir`` using ``backends``.

    With a ``ragopt.metrics.Recorder`` the model functions are wrapped before
    RAG-Anything sees them (LightRAG copies them at start-up, so they cannot be
    swapped in later) and its callbacks are registered. LightRAG's own settings
    stay at their defaults unless ``lightrag_kwargs`` says otherwise: the
    baseline is RAG-Anything as shipped.
    """
    from raganything import RAGAnything, RAGAnythingConfig

    backends = backends or make_backends(config)
    working_dir = Path(working_dir)
    llm, vision, embedding = backends.llm_func, backends.vision_func, backends.embedding_func
    if recorder is not None:
        llm, vision, embedding = recorder.wrap_llm(llm), recorder.wrap_llm(vision), recorder.wrap_embedding(embedding)
    rag_config = RAGAnythingConfig(
        working_dir=str(working_dir),
        parser=offline_parser.register(),
        parser_output_dir=str(working_dir / "parsed"),
        parse_method="auto",
        display_content_stats=False,
        max_concurrent_files=config.max_concurrent_files,
        supported_file_extensions=SUPPORTED_EXTENSIONS,
    )
    settings: Dict[str, Any] = {
        "tokenizer": offline_tokenizer(),
        "enable_llm_cache": config.enable_llm_cache,
    }
    settings.update(lightrag_kwargs or {})
    rag = RAGAnything(
        config=rag_config,
        llm_model_func=llm,
        vision_model_func=vision,
        embedding_func=embedding,
        lightrag_kwargs=settings,
    )
    if recorder is not None:
        recorder.observe(rag)
    return rag
