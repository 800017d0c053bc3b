"""One parsed document into LightRAG and RAG-Anything: the steps of ``insert_content_list``.

Text insert (through the shared ``LightRAGQueue`` run rather than a run of its
own), page annotation, HANDLING status, the multimodal stage, PROCESSED. The
multimodal stage starts beside the text (``ragopt.engine.text_gates``), and
its steps that need the text's results wait for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, List, Optional, Tuple

from ragopt.compat import raganything as rag_compat
from ragopt.engine.queue_driver import LightRAGQueue
from ragopt.engine.text_gates import TextGates


def fully_processed(status: Optional[dict]) -> bool:
    """Text and multimodal stage both done. LightRAG rewrites the record without
    ``multimodal_processed`` when it finishes the text, so a missing flag means not done."""
    return bool(status) and status.get("status") == "processed" and status.get("multimodal_processed") is True


async def insert_document(rag: Any, queue: LightRAGQueue, path: str, doc_id: str, content: List[dict],
                          status: Optional[dict], queued: Callable[[], None],
                          text_done: Callable[[float], None] = lambda seconds: None) -> Tuple[float, float]:
    """Insert ``content`` as ``doc_id``; returns (text seconds, multimodal seconds).

    ``status`` is the document's record before this call (a previous run's,
    or None); ``queued`` is called once the text is queued in LightRAG (or
    there is none to queue), ``text_done`` once the text is in.
    """
    from raganything.base import DocStatus
    from raganything.document_context import document_context
    from raganything.utils import separate_content_with_page_map

    text, multimodal_items, page_intervals = separate_content_with_page_map(content)
    file_ref = rag_compat.file_reference(rag, path)

    @document_context  # the context extractor's source is per document, not per instance
    async def multimodal() -> float:
        start = time.perf_counter()
        if multimodal_items:
            rag.set_content_source_for_context(content, rag.config.content_format)
            await rag_compat.process_multimodal(rag, multimodal_items, file_ref, doc_id)
        else:
            await rag_compat.mark_multimodal_complete(rag, doc_id)
        return time.perf_counter() - start

    gates = TextGates.of(rag)
    text_in = gates.open(doc_id)
    multimodal_task = asyncio.create_task(multimodal())
    try:
        start = time.perf_counter()
        # A previous run got past the text (multimodal was interrupted): never queue it twice.
        text_is_in = status is not None and status.get("status") in (DocStatus.HANDLING, DocStatus.PROCESSED)
        if text.strip() and not text_is_in:
            track_id = await queue.process_text(doc_id, text, file_ref, status, queued)
            await rag_compat.annotate_chunk_pages(rag, doc_id, track_id, text, page_intervals)
        else:
            queued()  # nothing to queue
        text_s = time.perf_counter() - start
        text_done(text_s)
        await rag_compat.upsert_doc_status(rag, doc_id, file_ref, DocStatus.HANDLING)
        text_in.set_result(None)
        multimodal_s = await multimodal_task
    except BaseException:
        multimodal_task.cancel()  # the text failed: its multimodal steps must not run on
        await asyncio.gather(multimodal_task, return_exceptions=True)
        raise
    finally:
        gates.close(doc_id)
    final = await rag.lightrag.doc_status.get_by_id(doc_id)
    if not final or final.get("status") != "processed":
        raise RuntimeError(f"{doc_id} ended as {final.get('status') if final else 'missing'}: {(final or {}).get('error_msg', '')}")
    return text_s, multimodal_s
