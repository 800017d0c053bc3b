"""Releasing a RAGAnything so its memory can be returned (RAG-Anything keeps every instance alive)."""

from __future__ import annotations

import gc
from typing import Any

from ragopt.aio import run_sync
from ragopt.compat.lightrag import drop_workspace_shared_state, queue_shutdowns
from ragopt.compat.raganything import drop_instance_state, forget_atexit_close


async def arelease_rag(rag: Any, drop_shared_state: bool = True) -> None:
    """Release a ``raganything.RAGAnything`` instance so its memory can be returned.

    1. Forget the ``atexit`` registration of ``rag.close``: RAG-Anything 1.4.3
       registers every instance's ``close``, and that bound method keeps the
       whole instance (LightRAG, storages, caches) alive until exit.
    2. ``await rag.finalize_storages()``: flushes caches to disk and closes
       storages; then the model-call queue workers LightRAG and ragopt start
       on the event loop are stopped.
    3. Drop the instance's references to LightRAG, its caches and modal
       processors, so they are freed even while the caller still holds
       ``rag``. The instance stays usable: its next call initializes LightRAG.
    4. With ``drop_shared_state``, remove this workspace's entries (and idle
       merge locks) from LightRAG's process-global shared storage: JSON KV and
       doc-status storages keep their data there, so without this the next
       instance of the workspace sees the old documents instead of loading its
       own files. Do not use it while another live LightRAG instance shares the
       workspace (it would lose its in-memory data).
    """
    forget_atexit_close(rag)
    lightrag = rag.lightrag
    try:
        await rag.finalize_storages()
        if lightrag is not None:
            await _stop_queue_workers(lightrag)
    finally:
        drop_instance_state(rag)
        if drop_shared_state and lightrag is not None:
            await drop_workspace_shared_state(lightrag.workspace)
        del lightrag
        gc.collect()


async def _stop_queue_workers(lightrag: Any) -> None:
    """Stop the worker tasks of the LLM and embedding queues (left running, they keep the
    functions and what they reference alive on a notebook kernel's loop)."""
    embedding = getattr(lightrag, "embedding_func", None)
    funcs = (getattr(lightrag, "llm_model_func", None), embedding, getattr(embedding, "func", None))
    for shutdown in queue_shutdowns(funcs):
        try:
            await shutdown()
        except RuntimeError:
            pass  # its workers live on another event loop and end with it


def release_rag(rag: Any, drop_shared_state: bool = True) -> None:
    """Synchronous ``arelease_rag``: in scripts, inside Jupyter and after ``ragopt.ingest``.

    It runs on the loop ``ragopt.aio.run_sync`` uses, the one ``ingest`` ran
    on, so the queue workers, which live on that loop, are stopped too.
    """
    run_sync(arelease_rag(rag, drop_shared_state))
