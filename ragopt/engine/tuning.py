"""LightRAG's knobs from one concurrency setting: K, the LLM's slots."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ragopt.engine.registry import BEFORE_INIT, Optimization, Target, register_optimization


def lightrag_settings(llm_slots: int, embedding_batch: int = 64, max_documents: Optional[int] = None) -> Dict[str, Any]:
    """LightRAG settings that keep ``llm_slots`` LLM requests in flight.

    - ``llm_model_max_async = llm_slots``: LightRAG's own LLM queue admits as
      many requests as the service has slots; more would only queue there.
    - ``max_parallel_insert = 4 * llm_slots`` (at most ``max_documents``):
      LightRAG holds a document's insert slot through its merge phase, when it
      makes few LLM calls. With four documents per LLM slot, the documents
      still extracting keep every slot busy while others merge.
    - ``embedding_func_max_async = 8 * llm_slots``: merges embed one entity or
      relation per call; letting many wait at once is what lets the
      micro-batcher send them as one batch.
    - ``embedding_batch_num = embedding_batch``: texts per call where LightRAG
      batches itself (chunks).
    """
    parallel = 4 * llm_slots if max_documents is None else min(4 * llm_slots, max_documents)
    return {
        "llm_model_max_async": llm_slots,
        "max_parallel_insert": parallel,
        "embedding_func_max_async": 8 * llm_slots,
        "embedding_batch_num": embedding_batch,
    }


def _install(target: Target) -> None:
    config = target.config
    settings = lightrag_settings(target.slots, config.embedding_batch_size, config.max_concurrent_files)
    target.stats.update(settings)
    target.rag.lightrag_kwargs.update(settings)


register_optimization(Optimization(
    name="tuned_concurrency",
    field="tuned_concurrency",
    summary="LightRAG's LLM queue, parallel inserts and embedding queue sized from the LLM's K slots",
    when=BEFORE_INIT,
    install=_install,
    counts=("llm_model_max_async", "max_parallel_insert", "embedding_func_max_async", "embedding_batch_num"),
))
