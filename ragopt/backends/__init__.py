"""The model backends of a run behind one small protocol: ``make_backends(config) -> Backends``.

The in-process LLM simulator by default, or a real OpenAI-compatible endpoint
when RAGOPT_LLM_BASE_URL is set; MiniLM embeddings and the offline tokenizer
either way. Like an httpx transport, the simulator plugs in exactly where a
real endpoint does: the rest of ragopt only sees the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

from ragopt.config import RagoptConfig

DEFAULT_ENDPOINT_SLOTS = 8  # K for a real endpoint when MAX_CONCURRENT_PROCESSING is not set
DEFAULT_ENDPOINT_EMBEDDING_MODEL = "text-embedding-3-small"


@dataclass
class Backends:
    """The model functions of one run and what they stand for."""

    llm_func: Callable
    vision_func: Callable
    embedding_func: Any  # lightrag.utils.EmbeddingFunc
    slots: int
    """Concurrent requests the LLM service serves: K in the LLM-bound limit."""
    description: str
    simulated: bool
    """Served by ragopt's simulator, in this process or over HTTP: every figure says so."""
    simulator: Any = None  # the in-process ragopt.backends.llm_sim.LLMSimulator, whose counters a run records


def embedding_device(config: RagoptConfig) -> Any:
    """The embedding model's ``DeviceChoice`` from the config (its worker process is kept per choice)."""
    from ragopt.backends.embedding import DeviceChoice

    return DeviceChoice(config.embedding_device, config.gpu_memory_fraction, config.fallback_to_cpu, config.embed_threads,
                        None if config.embedding_base_url else config.embedding_model)


def embedding_for(config: RagoptConfig) -> Any:
    """An OpenAI-compatible embeddings endpoint when RAGOPT_EMBEDDING_BASE_URL is set; else a
    sentence-transformers model (MiniLM by default) on the configured device, in its worker process."""
    if config.embedding_base_url:
        from ragopt.backends.openai_endpoint import endpoint_embedding_func

        return endpoint_embedding_func(config.embedding_base_url, config.embedding_api_key or config.llm_api_key,
                                       config.embedding_model or DEFAULT_ENDPOINT_EMBEDDING_MODEL, config.embedding_dim)
    from ragopt.backends.embedding import minilm_embedding_func

    return minilm_embedding_func(device=embedding_device(config), batch_size=config.embedding_batch_size, dim=config.embedding_dim,
                                 memo=config.embedding_input_memo)


def simulator_for(config: RagoptConfig):
    """A fresh simulator with the config's preset, K, faults and seed."""
    from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig

    overrides: Dict[str, Any] = {
        "seed": config.sim_seed,
        "rate_429": config.sim_rate_429,
        "rate_timeout": config.sim_rate_timeout,
        "rate_5xx": config.sim_rate_5xx,
        "max_queue": config.sim_max_queue,
    }
    if config.max_concurrent_processing is not None:
        overrides["slots"] = config.max_concurrent_processing
    return LLMSimulator(SimulatorConfig.preset(config.sim_preset, **overrides))


def make_backends(config: RagoptConfig) -> Backends:
    """The simulator unless a real endpoint is configured; MiniLM embeddings."""
    embedding = embedding_for(config)
    if not config.uses_simulator:
        from ragopt.backends.openai_endpoint import endpoint_llm_func, served_by_simulator

        llm = endpoint_llm_func(config.llm_base_url, config.llm_api_key, config.llm_model)
        vision = endpoint_llm_func(config.llm_base_url, config.llm_api_key, config.vision_model or config.llm_model)
        simulated = served_by_simulator(config.llm_base_url, config.llm_api_key)
        what = "SIMULATED LLM service over HTTP" if simulated else "endpoint"
        return Backends(
            llm_func=llm,
            vision_func=vision,
            embedding_func=embedding,
            slots=config.max_concurrent_processing or DEFAULT_ENDPOINT_SLOTS,
            description=f"{what} {config.llm_base_url} model {config.llm_model}",
            simulated=simulated,
        )

    from ragopt.backends.llm_sim import llm_func, vision_func

    simulator = simulator_for(config)
    sim_config = simulator.config
    return Backends(
        llm_func=llm_func(simulator),
        vision_func=vision_func(simulator),
        embedding_func=embedding,
        slots=sim_config.slots,
        description=(
            f"SIMULATED LLM service (preset {config.sim_preset}, K={sim_config.slots}, "
            f"{sim_config.ttft_s:g} s + {sim_config.tpot_s * 1000:g} ms/token)"
        ),
        simulated=True,
        simulator=simulator,
    )
