"""The shape of every RAG-Anything and LightRAG internal that ragopt.compat touches, pinned.

An upgrade that renames, moves or re-signs one fails here, naming the touch
point (the compat function) and what it relies on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect

import pytest
from lightrag import LightRAG
from lightrag.kg import shared_storage
from lightrag.utils import priority_limit_async_func_call
from raganything import RAGAnything

from ragopt.compat import lightrag as lightrag_compat
from ragopt.compat import raganything as rag_compat


def parameters(func) -> list:
    return list(inspect.signature(func).parameters)


# (touch point, internal, the parameters it must take, in order)
METHOD_PINS = [
    (rag_compat.ensure_initialized, RAGAnything._ensure_lightrag_initialized, ["self"]),
    (rag_compat.after_initialization, RAGAnything._ensure_lightrag_initialized, ["self"]),
    (rag_compat.file_reference, RAGAnything._get_file_reference, ["self", "file_path"]),
    (rag_compat.process_multimodal, RAGAnything._process_multimodal_content, ["self", "multimodal_items", "file_path", "doc_id"]),
    (rag_compat.mark_multimodal_complete, RAGAnything._mark_multimodal_processing_complete, ["self", "doc_id"]),
    (rag_compat.annotate_chunk_pages, RAGAnything._annotate_text_chunk_pages,
     ["self", "doc_id", "track_id", "text_content", "page_intervals", "split_by_character", "split_by_character_only"]),
    (rag_compat.upsert_doc_status, RAGAnything._upsert_doc_status, ["self", "doc_id", "file_path", "scheme_name", "updates"]),
    (rag_compat.gate_multimodal_steps, RAGAnything._batch_merge_lightrag_style_type_aware,
     ["self", "enhanced_chunk_results", "file_path", "doc_id"]),
    (rag_compat.gate_multimodal_steps, RAGAnything._update_doc_status_with_chunks_type_aware, ["self", "doc_id", "chunk_ids"]),
    (rag_compat.gate_multimodal_steps, RAGAnything._mark_multimodal_processing_complete, ["self", "doc_id"]),
    (rag_compat.wrap_parse_cache_lookup, RAGAnything._get_cached_result, ["self", "cache_key", "file_path", "parse_method", "kwargs"]),
    (rag_compat.forget_atexit_close, RAGAnything.close, ["self"]),
    (lightrag_compat.flush_all, LightRAG._insert_done, ["self", "pipeline_status", "pipeline_status_lock"]),
    (lightrag_compat.replace_flush_all, LightRAG._insert_done, ["self", "pipeline_status", "pipeline_status_lock"]),
    (lightrag_compat.pipeline_status, shared_storage.get_namespace_data, ["namespace", "first_init", "workspace"]),
    (lightrag_compat.drop_workspace_shared_state, shared_storage.get_internal_lock, ["enable_logging"]),
]


@pytest.mark.parametrize("touch, internal, expected", METHOD_PINS,
                         ids=[f"{t.__name__}->{i.__qualname__}" for t, i, _ in METHOD_PINS])
def test_touched_method_keeps_its_signature(touch, internal, expected):
    assert parameters(internal)[: len(expected)] == expected, (
        f"ragopt.compat.{touch.__module__.rsplit('.', 1)[1]}.{touch.__name__} relies on "
        f"{internal.__qualname__}{tuple(expected)}; it is now {inspect.signature(internal)}"
    )


def test_initialization_is_looked_up_on_the_instance_by_every_entry_point():
    """after_initialization replaces the method on the instance; every entry point must call it as self.<name>."""
    import raganything.processor as processor

    source = inspect.getsource(processor)
    assert source.count("self._ensure_lightrag_initialized()") >= 3


def test_raganything_instance_state_fields_exist():
    fields = {f.name for f in dataclasses.fields(RAGAnything)}
    needed = {"lightrag", "llm_model_func", "vision_model_func", "embedding_func", "lightrag_kwargs",
              "modal_processors", "context_extractor", "parse_cache", "multimodal_status_cache", "callback_manager"}
    assert needed <= fields, f"ragopt.compat.raganything.drop_instance_state and optimize rely on {sorted(needed - fields)}"


def test_post_init_registers_close_with_atexit():
    source = inspect.getsource(RAGAnything.__post_init__)
    assert "atexit.register(self.close)" in source, "forget_atexit_close undoes exactly this registration"


def test_lightrag_storages_that_flushes_cover_exist():
    fields = {f.name for f in dataclasses.fields(LightRAG)}
    source = inspect.getsource(LightRAG)
    for name in ("full_docs", "text_chunks", "full_entities", "full_relations", "entity_chunks", "relation_chunks",
                 "llm_response_cache", "entities_vdb", "relationships_vdb", "chunks_vdb", "chunk_entity_relation_graph",
                 "doc_status"):
        assert name in fields or f"self.{name} " in source or f"self.{name}:" in source, (
            f"ragopt.compat.lightrag.data_storages flushes LightRAG.{name}")
    insert_done = inspect.getsource(LightRAG._insert_done)
    assert "index_done_callback" in insert_done


def test_the_llm_queue_takes_a_priority_and_has_shutdown():
    async def model(prompt, **kwargs):
        return prompt

    queued = priority_limit_async_func_call(2)(model)
    assert "_priority" in inspect.signature(queued, follow_wrapped=False).parameters, "set_llm_priority passes _priority"
    assert callable(getattr(queued, "shutdown", None)), "queue_shutdowns stops the queue's workers"

    async def call() -> str:
        try:
            return await queued("hello", _priority=lightrag_compat.GLEAN_PRIORITY)
        finally:
            await queued.shutdown()

    assert asyncio.run(call()) == "hello"


def test_openai_binding_retry_is_lightrags_tenacity_policy():
    import openai
    import tenacity
    from lightrag.llm.openai import openai_complete_if_cache

    policy = openai_complete_if_cache.retry
    assert isinstance(policy, tenacity.AsyncRetrying), "openai_binding_retry copies the binding's tenacity policy"
    assert policy.stop.max_attempt_number == 3
    attempts = []

    async def flaky(prompt):
        attempts.append(prompt)
        raise openai.APIConnectionError(request=__import__("httpx").Request("POST", "http://x"))

    retried = lightrag_compat.openai_binding_retry(flaky)
    retried.retry.wait = tenacity.wait_none()  # the policy's 4-10 s waits are not what is pinned here
    with pytest.raises(tenacity.RetryError):
        asyncio.run(retried("hello"))
    assert len(attempts) == 3


def test_shared_storage_registries_and_keyed_lock_shape():
    for name in ("_initialized", "_shared_dicts", "_init_flags", "_update_flags", "_storage_keyed_lock"):
        assert hasattr(shared_storage, name), f"drop_workspace_shared_state relies on shared_storage.{name}"
    lock_source = inspect.getsource(shared_storage.KeyedUnifiedLock)
    for name in ("_async_lock", "_async_lock_count", "_async_lock_cleanup_data"):
        assert f"self.{name}" in lock_source, f"_drop_idle_merge_locks relies on KeyedUnifiedLock.{name}"


def test_merge_lock_keys_follow_the_workspace_graphdb_convention():
    import lightrag.operate as operate

    source = inspect.getsource(operate)
    assert 'namespace = f"{workspace}:GraphDB" if workspace else "GraphDB"' in source, (
        "_drop_idle_merge_locks forgets keys named <workspace>:GraphDB:<entity>")
