"""RAG-Anything's multimodal stage run beside a document's text, with the text's results kept.

RAG-Anything processes a document's tables and images only after its text is
fully in LightRAG, so a document with images spends its text time, then its
multimodal time: describing each item (one LLM call), then extracting entities
from the descriptions (extract and glean calls). Those calls do not depend on
the text's results, only on the parsed content, so ragopt starts them with
the text. The steps that do (they read or write what the text stage wrote)
wait for it, exactly as in RAG-Anything's order:

- the merge of the multimodal entities (LightRAG's merge replaces the
  document's ``full_entities``/``full_relations`` record, so the last merge
  decides it: the multimodal one, as in RAG-Anything);
- adding the multimodal chunks to the document's status record, and marking
  the document processed.

RAG-Anything numbers multimodal chunks after the text's chunks, reading the
count from the status record when it starts; started early, it may read no
count, so the numbers are shifted to follow the text's once the text is in.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List

from ragopt.compat.raganything import gate_multimodal_steps


class TextGates:
    """Per document, a future resolved when its text is in LightRAG; multimodal steps that need it wait."""

    def __init__(self, rag: Any):
        self.rag = rag
        self._gates: Dict[str, asyncio.Future] = {}
        gate_multimodal_steps(rag, self._wait, self._renumber, self._merge_keeping_text_entities)

    @classmethod
    def of(cls, rag: Any) -> "TextGates":
        """The gates installed on ``rag`` (installed on first use)."""
        gates = getattr(rag, "ragopt_text_gates", None)
        if gates is None:
            gates = rag.ragopt_text_gates = cls(rag)
        return gates

    def open(self, doc_id: str) -> asyncio.Future:
        """A gate for ``doc_id``: set its result once the document's text is in LightRAG."""
        gate = self._gates[doc_id] = asyncio.get_running_loop().create_future()
        return gate

    def close(self, doc_id: str) -> None:
        self._gates.pop(doc_id, None)

    async def _wait(self, doc_id: str) -> None:
        gate = self._gates.get(doc_id)
        if gate is not None:
            await gate

    async def _merge_keeping_text_entities(self, doc_id: str, merge: Any) -> Any:
        """The multimodal merge, then the document's entity and relation lists as the union of both merges.

        LightRAG's merge replaces the document's ``full_entities``/``full_relations``
        record with its own names, so after RAG-Anything's multimodal merge only the
        multimodal entities are listed and LightRAG's ``adelete_by_doc_id``, which
        deletes what that record lists, would leave the text's entities behind.
        """
        lightrag = self.rag.lightrag
        text_entities, text_relations = await lightrag.full_entities.get_by_id(doc_id), await lightrag.full_relations.get_by_id(doc_id)
        result = await merge()
        for storage, before, key in ((lightrag.full_entities, text_entities, "entity_names"),
                                     (lightrag.full_relations, text_relations, "relation_pairs")):
            after = await storage.get_by_id(doc_id)
            if before and after:
                union = {tuple(i) if isinstance(i, list) else i: i for i in (before.get(key) or []) + (after.get(key) or [])}
                await storage.upsert({doc_id: {**after, key: list(union.values()), "count": len(union)}})
                await storage.index_done_callback()  # on disk before the status says processed
        return result

    async def _renumber(self, doc_id: str, chunk_ids: List[str]) -> None:
        """Number the multimodal chunks after the text's, as RAG-Anything does when it runs second."""
        status = await self.rag.lightrag.doc_status.get_by_id(doc_id) or {}
        text_chunks = status.get("chunks_count", 0)
        stored = await self.rag.lightrag.text_chunks.get_by_ids(chunk_ids)
        chunks = {chunk_id: chunk for chunk_id, chunk in zip(chunk_ids, stored) if chunk}
        if not chunks:
            return
        shift = text_chunks - min(chunk.get("chunk_order_index", 0) for chunk in chunks.values())
        if shift:
            await self.rag.lightrag.text_chunks.upsert(
                {chunk_id: {**chunk, "chunk_order_index": chunk.get("chunk_order_index", 0) + shift}
                 for chunk_id, chunk in chunks.items()}
            )
            # On disk before the status record lists the chunks (RAG-Anything's merge flushed them already).
            await self.rag.lightrag.text_chunks.index_done_callback()
