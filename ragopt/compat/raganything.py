"""Every touch of RAG-Anything 1.4.3's private names, one function each.

Each function says what it relies on; ``tests/compat/test_pins.py`` pins the
signature or shape of every target, so an upgrade that moves one fails
there with the touch point's name instead of somewhere deep in an ingestion.
"""

from __future__ import annotations

import atexit
from typing import Any, Awaitable, Callable, List, Optional


async def ensure_initialized(rag: Any) -> None:
    """Create (once) the rag's LightRAG, its storages and modal processors.

    Relies on ``RAGAnything._ensure_lightrag_initialized() -> {"success": bool,
    "error": str}``, which every public entry point of RAG-Anything calls first.
    """
    result = await rag._ensure_lightrag_initialized()
    if not result or not result.get("success"):
        raise RuntimeError(f"LightRAG initialization failed: {(result or {}).get('error', 'unknown error')}")


def is_initialized(rag: Any) -> bool:
    """Whether RAG-Anything has created the rag's LightRAG (``rag.lightrag`` is public)."""
    return rag.lightrag is not None


def after_initialization(rag: Any, hook: Callable[[], None]) -> None:
    """Run ``hook`` once, right after RAG-Anything creates its LightRAG (storages exist then).

    Relies on ``_ensure_lightrag_initialized`` being looked up on the instance
    by every caller, so an instance attribute replaces it.
    """
    initialize = rag._ensure_lightrag_initialized
    done: List[bool] = []

    async def initialize_then_hook(*args: Any, **kwargs: Any):
        result = await initialize(*args, **kwargs)
        if rag.lightrag is not None and not done:
            done.append(True)
            hook()
        return result

    rag._ensure_lightrag_initialized = initialize_then_hook


def file_reference(rag: Any, path: str) -> str:
    """The file name RAG-Anything stores for ``path`` (``_get_file_reference``: full path or name, by config)."""
    return rag._get_file_reference(path)


async def process_multimodal(rag: Any, items: List[dict], file_ref: str, doc_id: str) -> None:
    """RAG-Anything's multimodal stage for one document (``_process_multimodal_content``)."""
    await rag._process_multimodal_content(items, file_ref, doc_id)


async def mark_multimodal_complete(rag: Any, doc_id: str) -> None:
    """Set ``multimodal_processed`` on the document's status (``_mark_multimodal_processing_complete``)."""
    await rag._mark_multimodal_processing_complete(doc_id)


async def annotate_chunk_pages(rag: Any, doc_id: str, track_id: Optional[str], text: str, page_intervals: Any) -> None:
    """Write page numbers into the text chunks, as ``insert_content_list`` does (``_annotate_text_chunk_pages``)."""
    await rag._annotate_text_chunk_pages(doc_id, track_id, text, page_intervals, None, False)


async def upsert_doc_status(rag: Any, doc_id: str, file_ref: str, status: Any, error_msg: str = "") -> None:
    """Write the document's status record the way RAG-Anything does (``_upsert_doc_status``)."""
    await rag._upsert_doc_status(doc_id, file_ref, status=status, error_msg=error_msg)


def gate_multimodal_steps(rag: Any, wait: Callable[[str], Awaitable[None]],
                          renumber: Callable[[str, List[str]], Awaitable[None]],
                          around_merge: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]) -> None:
    """Make the multimodal steps that read or write the text's results wait for ``wait(doc_id)``.

    Relies on three methods of RAG-Anything's type-aware multimodal path:
    ``_batch_merge_lightrag_style_type_aware(chunk_results, file_path, doc_id)``
    (run as ``around_merge(doc_id, merge)``), ``_update_doc_status_with_chunks_type_aware(doc_id,
    chunk_ids)`` (preceded here by ``renumber``) and ``_mark_multimodal_processing_complete(doc_id)``.
    """
    merge = rag._batch_merge_lightrag_style_type_aware
    update = rag._update_doc_status_with_chunks_type_aware
    mark = rag._mark_multimodal_processing_complete

    async def merge_after_text(chunk_results: Any, file_path: str, doc_id: str = None):
        await wait(doc_id)
        return await around_merge(doc_id, lambda: merge(chunk_results, file_path, doc_id))

    async def update_after_text(doc_id: str, chunk_ids: List[str]):
        await wait(doc_id)
        await renumber(doc_id, chunk_ids)
        return await update(doc_id, chunk_ids)

    async def mark_after_text(doc_id: str):
        await wait(doc_id)
        return await mark(doc_id)

    rag._batch_merge_lightrag_style_type_aware = merge_after_text
    rag._update_doc_status_with_chunks_type_aware = update_after_text
    rag._mark_multimodal_processing_complete = mark_after_text


def wrap_parse_cache_lookup(rag: Any, wrap: Callable[[Callable], Callable]) -> None:
    """Replace RAG-Anything's parse-cache lookup (``_get_cached_result``, None on a miss) by ``wrap(lookup)``."""
    rag._get_cached_result = wrap(rag._get_cached_result)


def forget_atexit_close(rag: Any) -> None:
    """Undo ``atexit.register(self.close)`` of ``RAGAnything.__post_init__``.

    That bound method keeps the whole instance alive until the interpreter
    exits; bound methods compare equal by (``__self__``, ``__func__``).
    """
    atexit.unregister(rag.close)


def drop_instance_state(rag: Any) -> None:
    """Drop the instance's LightRAG, caches and modal processors (dataclass fields of RAGAnything).

    The instance stays usable: its next call initializes LightRAG again.
    """
    rag.modal_processors = {}
    rag.context_extractor = None
    rag.parse_cache = None
    rag.multimodal_status_cache = None
    rag.lightrag = None
