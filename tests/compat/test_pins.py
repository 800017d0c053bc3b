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


def test_the_embedding_queue_lets_a_call_run_twice_default_embedding_timeout():
    """``embedding_call_limit_s``: LightRAG passes ``default_embedding_timeout`` as the queue's
    ``llm_timeout``, and the queue fails a call that runs past twice that."""
    assert "llm_timeout=self.default_embedding_timeout" in "".join(inspect.getsource(LightRAG.__post_init__).split())
    limit = lightrag_compat.embedding_call_limit_s({"default_embedding_timeout": 0.25})

    async def takes(seconds):
        await asyncio.sleep(seconds)
        return seconds

    async def call(seconds):
        queued = priority_limit_async_func_call(1, llm_timeout=0.25, queue_name="pin")(takes)
        try:
            return await queued(seconds)
        finally:
            await queued.shutdown()

    assert asyncio.run(call(limit * 0.6)) == limit * 0.6
    with pytest.raises(TimeoutError):
        asyncio.run(call(limit * 1.6))


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
        assert f"self.{name}" in lock_source, f"_drop_idle_keyed_locks relies on KeyedUnifiedLock.{name}"


def test_merge_lock_keys_follow_the_workspace_graphdb_convention():
    import lightrag.operate as operate

    source = inspect.getsource(operate)
    assert 'namespace = f"{workspace}:GraphDB" if workspace else "GraphDB"' in source, (
        "_drop_idle_keyed_locks forgets keys named <workspace>:GraphDB:<entity>")


def test_storage_locks_are_keyed_by_the_workspaces_final_namespace():
    """_drop_idle_keyed_locks knows workspace ""'s keys by their namespace: "doc_status:default_key"."""
    assert shared_storage.get_final_namespace("doc_status", "") == "doc_status"
    assert shared_storage.get_final_namespace("doc_status", "ws") == "ws:doc_status"
    source = inspect.getsource(shared_storage.NamespaceLock)
    assert "get_storage_keyed_lock(" in source and "namespace=final_namespace" in source


def test_cached_llm_exchange_reads_what_save_to_cache_stores():
    """cached_llm_exchange values an LLM-cache hit from the entry LightRAG's save_to_cache writes."""
    from lightrag.utils import CacheData, save_to_cache

    class Store:  # the two methods save_to_cache uses
        def __init__(self):
            self.data = {}

        async def get_by_id(self, key):
            return self.data.get(key)

        async def upsert(self, entries):
            self.data.update(entries)

    store = Store()
    asyncio.run(save_to_cache(store, CacheData(args_hash="h", content="the answer", prompt="the prompt", cache_type="extract")))
    (entry,) = store.data.values()
    assert lightrag_compat.cached_llm_exchange(entry) == ("the prompt", "the answer")


# -- ragopt.compat.queries -------------------------------------------------------------


def test_query_answers_go_through_operates_own_cache_globals():
    """rekey_query_answers replaces lightrag.operate.handle_cache / save_to_cache; kg_query and naive_query use them."""
    import lightrag.operate as operate
    import lightrag.utils as utils

    from ragopt.compat import queries

    # Pinned on LightRAG's own functions (the module globals may already be ragopt's wrappers).
    assert parameters(utils.handle_cache) == ["hashing_kv", "args_hash", "prompt", "mode", "cache_type"]
    assert parameters(utils.save_to_cache) == ["hashing_kv", "cache_data"]
    assert {"args_hash", "cache_type"} <= {f.name for f in dataclasses.fields(utils.CacheData)}
    for query in (operate.kg_query, operate.naive_query):
        source = inspect.getsource(query)
        assert "await handle_cache(" in source and f'cache_type="{queries.QUERY_CACHE_TYPE}"' in source, query.__name__
        assert "await save_to_cache(" in source, query.__name__
    # Extraction and summaries keep LightRAG's keys: they call utils' own handle_cache.
    assert "handle_cache(" in inspect.getsource(utils.use_llm_func_with_cache)


def test_aquery_runs_through_the_instances_aquery_llm():
    source = inspect.getsource(LightRAG.aquery)
    assert "await self.aquery_llm(" in source, "ragopt.compat.queries.around_queries wraps aquery_llm on the instance"


def test_the_multimodal_query_cache_key_comes_from_one_method():
    from raganything.query import QueryMixin

    assert parameters(RAGAnything._generate_multimodal_cache_key)[:4] == ["self", "query", "multimodal_content", "mode"]
    source = inspect.getsource(QueryMixin.aquery_with_multimodal)
    assert source.count("self._generate_multimodal_cache_key(") == 1, "rekey_multimodal_queries wraps it on the instance"


def test_query_embeddings_say_they_are_for_a_query():
    """The micro-batcher's query lane (queries_first) tells query embeddings by LightRAG's context="query"."""
    import lightrag.kg.nano_vector_db_impl as nano
    import lightrag.operate as operate

    assert 'context="query"' in inspect.getsource(operate._perform_kg_search)
    assert 'context="query"' in inspect.getsource(nano.NanoVectorDBStorage.query)
    assert 'context="document"' in inspect.getsource(nano.NanoVectorDBStorage.upsert)


# -- ragopt.compat.storage_files and ragopt.engine.repair -------------------------------
# Pinned on LightRAG's source (the live names may already be ragopt's replacements).


def test_json_storages_write_and_load_through_utils_functions_imported_by_name():
    """protect_storage_files replaces write_json/load_json in lightrag.utils and in both JSON storage modules."""
    import lightrag.kg.json_doc_status_impl as doc_status
    import lightrag.kg.json_kv_impl as kv
    import lightrag.utils as utils

    source = inspect.getsource(utils)
    assert "def write_json(json_obj, file_name):" in source and "def load_json(file_name):" in source
    assert "return True  # Sanitization applied" in source, "_write_json keeps the bool contract: True means reload"
    for module in (kv, doc_status):
        module_source = inspect.getsource(module)
        assert "load_json,\n" in module_source and "write_json,\n" in module_source, module.__name__
        assert "needs_reload = write_json(data_dict, self._file_name)" in module_source, module.__name__
        assert "load_json(self._file_name)" in module_source, module.__name__


def test_the_graph_is_written_and_read_through_networkx_storage_staticmethods():
    import lightrag.kg.networkx_impl as networkx_impl

    source = inspect.getsource(networkx_impl)
    assert 'def write_nx_graph(graph: nx.Graph, file_name, workspace="_"):' in source
    assert "def load_nx_graph(file_name) -> nx.Graph:" in source
    assert "NetworkXStorage.write_nx_graph(\n" in source, "called through the class: a class attribute replaces it"
    assert source.count("NetworkXStorage.load_nx_graph(") >= 2  # the constructor and the reload


def test_nano_vectordb_saves_its_private_storage_dict_and_loads_through_a_module_function():
    import lightrag.kg.nano_vector_db_impl as nano
    import nano_vectordb.dbs as dbs

    source = inspect.getsource(dbs)
    assert "def save(self):" in source and 'array_to_buffer_string(self.__storage["matrix"])' in source
    assert "storage: DataBase = load_storage(self.storage_file)" in source, "a module global: dbs.load_storage replaces it"
    assert "def load_storage(file_name)" in source
    assert "self._client.save()" in inspect.getsource(nano)


def test_faiss_storage_saves_and_loads_through_two_methods_and_swallows_load_errors():
    faiss_impl = pytest.importorskip("lightrag.kg.faiss_impl")
    source = inspect.getsource(faiss_impl)
    for needed in ("def _save_faiss_index(self):", "self._save_faiss_index()", "def _load_faiss_index(self):",
                   "self._load_faiss_index()", "self._faiss_index_file = ", "self._meta_file = ", "self._id_to_meta",
                   "faiss.write_index(self._index, self._faiss_index_file)"):
        assert needed in source, f"ragopt.compat.storage_files relies on {needed!r}"
    assert "Starting with an empty Faiss index." in source, "why _checked_faiss_loader reads the files first"


def test_deletion_reads_what_repair_widens_and_runs_on_the_instances_flush():
    from ragopt.engine import repair

    assert parameters(LightRAG.adelete_by_doc_id)[:3] == ["self", "doc_id", "delete_llm_cache"]
    assert parameters(LightRAG.apipeline_enqueue_documents)[:5] == ["self", "input", "ids", "file_paths", "track_id"]
    source = inspect.getsource(LightRAG.adelete_by_doc_id)
    for needed in ('doc_status_data.get("chunks_list", [])', "await self.full_entities.get_by_id(doc_id)",
                   "await self.full_relations.get_by_id(doc_id)", "await self._insert_done()"):
        assert needed in source, f"ragopt.engine.repair relies on adelete_by_doc_id reading {needed!r}"
    assert parameters(LightRAG._insert_done)[:1] == ["self"], "ragopt.compat.lightrag.wrap_flush_all"
    from lightrag.constants import GRAPH_FIELD_SEP

    assert repair.SEPARATOR == GRAPH_FIELD_SEP


def test_queue_workers_are_known_and_end_with_their_shutdown():
    """A worker swallows a cancel that races with a queued call (asyncio.wait_for in 3.11) and goes on until
    its queue's shutdown: the query bench cancels what an ingestion started but these, which the release stops."""
    async def scenario():
        async def echo(x):
            return x

        wrapped = priority_limit_async_func_call(2)(echo)
        assert await wrapped(1) == 1
        workers = [t for t in asyncio.all_tasks() if lightrag_compat.is_queue_worker(t)]
        for shutdown in lightrag_compat.queue_shutdowns([wrapped]):
            await shutdown()
        return workers

    workers = asyncio.run(scenario())
    assert workers, "is_queue_worker no longer recognizes priority_limit_async_func_call's workers"
    assert all(t.done() for t in workers)
    source = inspect.getsource(priority_limit_async_func_call)
    assert "async def worker()" in source and "asyncio.wait_for(queue.get()" in source
