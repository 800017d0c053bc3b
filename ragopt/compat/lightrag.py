"""Every touch of LightRAG 1.4.16's private names and process-global state, one function each.

Each function says what it relies on; ``tests/compat/test_pins.py`` pins the
signature or shape of every target.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Tuple

GLEAN_PRIORITY = 9  # LightRAG's LLM queue serves lower numbers first: summaries 8, extraction 10


async def pipeline_status(lightrag: Any) -> Dict[str, Any]:
    """The workspace's shared ``pipeline_status`` dict (``busy``, ``request_pending``, ``cancellation_requested``).

    Relies on ``lightrag.kg.shared_storage.get_namespace_data(namespace, workspace=...)``.
    """
    from lightrag.kg.shared_storage import get_namespace_data

    return await get_namespace_data("pipeline_status", workspace=getattr(lightrag, "workspace", None))


async def flush_all(lightrag: Any) -> None:
    """LightRAG's end-of-document flush of every storage (``LightRAG._insert_done()``)."""
    await lightrag._insert_done()


def replace_flush_all(lightrag: Any, flush: Callable[..., Any]) -> None:
    """Make LightRAG call ``flush`` where it calls ``_insert_done(pipeline_status=..., pipeline_status_lock=...)``."""
    lightrag._insert_done = flush


def wrap_flush_all(lightrag: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Make LightRAG's end-of-document flush ``wrap(the flush it has now)`` (``_insert_done``)."""
    lightrag._insert_done = wrap(lightrag._insert_done)


def data_storages(lightrag: Any) -> List[Any]:
    """The storages ``_insert_done`` flushes before the document status (LightRAG's public attributes)."""
    storages = [
        lightrag.full_docs, lightrag.text_chunks, lightrag.full_entities, lightrag.full_relations,
        lightrag.entity_chunks, lightrag.relation_chunks, lightrag.llm_response_cache,
        lightrag.entities_vdb, lightrag.relationships_vdb, lightrag.chunks_vdb,
        lightrag.chunk_entity_relation_graph,
    ]
    return [s for s in storages if s is not None]


def set_llm_priority(kwargs: Dict[str, Any], priority: int) -> None:
    """Ask LightRAG's LLM queue to serve this call at ``priority`` unless the caller chose one.

    Relies on ``priority_limit_async_func_call``'s wrapper taking ``_priority``
    (default 10, lower first) as a keyword argument.
    """
    kwargs.setdefault("_priority", priority)


def embedding_call_limit_s(lightrag_kwargs: Dict[str, Any]) -> float:
    """Seconds LightRAG's embedding queue lets one call run before failing it, with these constructor kwargs.

    Relies on ``priority_limit_async_func_call(llm_timeout=default_embedding_timeout)``
    allowing a worker twice ``llm_timeout`` (``max_execution_timeout``).
    """
    timeout = lightrag_kwargs.get("default_embedding_timeout")
    return 2.0 * float(lightrag_default("default_embedding_timeout") if timeout is None else timeout)


def set_embedding_call_limit_s(lightrag_kwargs: Dict[str, Any], seconds: float) -> None:
    """Make LightRAG's embedding queue let one call run ``seconds`` (see ``embedding_call_limit_s``)."""
    lightrag_kwargs["default_embedding_timeout"] = math.ceil(seconds / 2)


def lightrag_default(field: str) -> Any:
    """The default of a ``LightRAG`` constructor field (read from its environment variable at import, where it has one)."""
    import dataclasses

    from lightrag import LightRAG

    found = next(f for f in dataclasses.fields(LightRAG) if f.name == field)
    return found.default_factory() if found.default is dataclasses.MISSING else found.default


def queue_shutdowns(funcs: Iterable[Any]) -> List[Callable[[], Any]]:
    """The ``shutdown`` coroutines of the queue wrappers around ``funcs`` (through ``__wrapped__``).

    ``priority_limit_async_func_call`` gives each wrapped function worker
    tasks on the event loop and a ``shutdown`` attribute; ragopt's embedding
    micro-batcher follows the same convention.
    """
    found: List[Callable[[], Any]] = []
    for func in funcs:
        while func is not None:
            shutdown = getattr(func, "shutdown", None)
            if shutdown is not None and shutdown not in found:
                found.append(shutdown)
            func = getattr(func, "__wrapped__", None)
    return found


def is_queue_worker(task: "asyncio.Task") -> bool:
    """Whether ``task`` is a worker (or health check) of a ``priority_limit_async_func_call`` queue.

    Those catch ``CancelledError`` per queued call and carry on until their
    queue's ``shutdown`` (``queue_shutdowns``) is awaited: cancelling one does not end it.
    """
    return getattr(task.get_coro(), "__qualname__", "").startswith("priority_limit_async_func_call.")


def _belongs_to_workspace(final_namespace: str, workspace: str) -> bool:
    # shared_storage.get_final_namespace: "ws:namespace", or "namespace" for workspace "".
    if workspace:
        return final_namespace.startswith(f"{workspace}:")
    return ":" not in final_namespace


async def drop_workspace_shared_state(workspace: str) -> None:
    """Remove ``workspace``'s entries from LightRAG's process-global shared storage.

    JSON KV and doc-status storages keep their data in
    ``shared_storage._shared_dicts`` (with ``_init_flags`` and
    ``_update_flags``) keyed by workspace and namespace, so without this the
    data outlives the instance and the next instance of the workspace skips
    loading its own files. ``finalize_share_data()`` would reset every
    workspace, so only this one's keys go. Its idle keyed locks
    (``_storage_keyed_lock``) go too: LightRAG keeps each for 300 s.
    """
    from lightrag.kg import shared_storage

    if not shared_storage._initialized:
        return
    async with shared_storage.get_internal_lock():
        for registry in (shared_storage._shared_dicts, shared_storage._init_flags, shared_storage._update_flags):
            if registry is None:
                continue
            for key in [k for k in registry.keys() if _belongs_to_workspace(k, workspace)]:
                del registry[key]
    _drop_idle_keyed_locks(shared_storage._storage_keyed_lock, workspace)


def _lock_of_workspace(key: str, workspace: str) -> bool:
    """Whether a keyed lock's key (``"<ws>:<namespace>:<key>"``, or ``"<namespace>:<key>"`` for workspace "") is the workspace's."""
    if workspace:
        return key.startswith(f"{workspace}:")
    from lightrag.namespace import NameSpace

    unprefixed = {v for k, v in vars(NameSpace).items() if k.isupper()} | {"GraphDB", "pipeline_status"}
    return key.split(":", 1)[0] in unprefixed


def _drop_idle_keyed_locks(keyed_lock: Any, workspace: str) -> None:
    """Forget the workspace's keyed locks nobody holds or awaits: per-entity merge locks
    (``"<ws>:GraphDB:<entity>"``, lightrag.operate) and storage and pipeline locks
    (``"<ws>:doc_status:default_key"``, get_namespace_lock). An asyncio lock binds to the
    loop of its first contended wait, so one kept from a finished loop breaks the next
    instance's run on another loop ("bound to a different event loop"); a lock with no
    holder and no waiter is made anew on its next use."""
    if keyed_lock is None:
        return
    counts = keyed_lock._async_lock_count
    for key in [k for k in keyed_lock._async_lock if _lock_of_workspace(k, workspace) and counts.get(k, 0) == 0]:
        keyed_lock._async_lock.pop(key, None)
        counts.pop(key, None)
        keyed_lock._async_lock_cleanup_data.pop(key, None)


def merge_lock_keys(workspace: str) -> List[str]:
    """The keys of the workspace's per-entity merge locks LightRAG holds now (for tests and leak checks)."""
    from lightrag.kg import shared_storage

    keyed_lock = shared_storage._storage_keyed_lock
    prefix = f"{workspace}:GraphDB:" if workspace else "GraphDB:"
    return [] if keyed_lock is None else [k for k in keyed_lock._async_lock if k.startswith(prefix)]


def openai_binding_retry(func: Callable) -> Callable:
    """``func`` retried the way LightRAG's OpenAI binding retries its requests.

    Relies on ``lightrag.llm.openai.openai_complete_if_cache`` being a tenacity
    ``@retry`` function, whose ``.retry`` is its policy: 3 attempts, exponential
    waits of 4-10 s, on rate-limit, connection and timeout errors, Retry-After
    ignored. A user of RAG-Anything with LightRAG's binding gets exactly this.
    """
    from lightrag.llm.openai import openai_complete_if_cache

    return openai_complete_if_cache.retry.copy().wraps(func)


async def kv_namespace(lightrag: Any, namespace: str) -> Any:
    """A key-value store of the knowledge base's own kind (JSON file, Redis, ...) and workspace.

    Relies on ``LightRAG.key_string_value_json_storage_cls`` taking (namespace,
    workspace, global_config, embedding_func), as RAG-Anything opens its parse cache.
    """
    storage = lightrag.key_string_value_json_storage_cls(
        namespace=namespace, workspace=lightrag.workspace, global_config=lightrag.__dict__,
        embedding_func=lightrag.embedding_func,
    )
    await storage.initialize()
    return storage


def cached_llm_exchange(entry: Dict[str, Any]) -> Tuple[str, str]:
    """(prompt, answer) of an entry of LightRAG's LLM response cache, for valuing a hit.

    Relies on ``lightrag.utils.save_to_cache`` storing ``original_prompt`` (the
    user prompt, then system prompt and history, joined by newlines) and
    ``return`` (the answer).
    """
    return str(entry.get("original_prompt") or ""), str(entry.get("return") or "")
