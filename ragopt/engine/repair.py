"""Resume after a kill: a document a killed run left half-merged is deleted and queued again.

LightRAG writes a document's status record to disk at every change, but its
data (chunks, vectors, graph, LLM cache) only at the next full flush, which
writes a dozen files one after another. So after ``kill -9`` at any moment a
document can be:

- **unfinished for LightRAG** (PENDING after a reset, PROCESSING, FAILED) with
  part of its entities merged, written by another document's flush. LightRAG's
  next run processes it from scratch and merges it again: edge weights add up
  twice, descriptions repeat;
- **HANDLING** (RAG-Anything: text in, multimodal stage running), its
  multimodal merge half written; a rerun merges it again;
- **PROCESSED before its data reached disk**: marked done with part of its
  data missing, and never retried.

The last cannot be told from the files (RAG-Anything writes some of them
between full flushes: a kill left a document with its entity list and
entities on disk but most of its relations not), so ragopt keeps, in a key-value
namespace of the knowledge base's own kind (``ragopt_in_flight``), the
documents it has started whose data it has not yet seen on disk: a batch's
documents go on it before any of their text is queued, and come off once a
full flush that began after they were complete has finished without a write
error (``InFlight``, hooked on LightRAG's end-of-document flush through
``ragopt.compat.lightrag.wrap_flush_all``).

``InFlight.repair()``, at the start of each ingest call (LightRAG idle),
takes every document of the first two kinds and every listed one. One the
graph names no chunk of was never merged and is left as it is; every other
one is, after its chunk ids are saved in the journal (a kill before the
repair's flush leaves files where the status and chunk records already say the
document is gone while the graph still has it; the next repair reads the ids
from there),

1. given its full footprint: its chunks are its status record's
   ``chunks_list`` plus each chunk the graph names whose text record belongs
   to it (multimodal chunks are listed only at the end), its entities and
   relations what ``full_entities``/``full_relations`` list plus every node and
   edge whose source ids name one of those chunks (RAG-Anything's multimodal
   merge replaces those lists, and a torn flush leaves them behind the graph);
2. deleted by LightRAG's own ``adelete_by_doc_id``: an entity or relation
   only it supported goes, a shared one is rebuilt from the other chunks'
   cached extractions (no extraction call; a long description may be
   summarized again), its chunks and vectors go;
3. queued again under the same id and file path, so this run processes it
   once, its extraction answers coming from the LLM cache where they had
   reached disk.

LightRAG flushes every file after each deletion; here the deletions' flushes
wait for one at the end (8 documents of a 9-document knowledge base: 7 s
instead of 26 s on 2 busy cores), and the list is cleared only after it, so a
kill during the repair repairs again from the files. Not covered: chunks
stored before anything referenced them (a multimodal item between its
storing and its entity; the rerun writes the same ids over them), and a
relation LightRAG cannot rebuild from cached extractions (RAG-Anything's
``belongs_to`` edges to a multimodal entity another document shares by name:
its weight keeps the deleted document's share, and the rerun adds it again).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Dict, Iterable, List, Set, Tuple

from ragopt.compat import storage_files
from ragopt.compat.lightrag import flush_all, kv_namespace, pipeline_status, wrap_flush_all
from ragopt.engine.steps import fully_processed
from ragopt.engine.versions import delete_document

logger = logging.getLogger(__name__)

NAMESPACE = "ragopt_in_flight"
KEY = "documents"
SEPARATOR = "<SEP>"  # LightRAG's GRAPH_FIELD_SEP between the chunk ids of a node's or edge's source_id
UNFINISHED = ("pending", "processing", "failed", "handling")


def source_chunks(item: Dict[str, Any]) -> Set[str]:
    """The chunk ids a graph node's or edge's ``source_id`` names."""
    return {c for c in str(item.get("source_id") or "").split(SEPARATOR) if c}


class InFlight:
    """The documents of one knowledge base that ragopt started and has not yet seen on disk."""

    def __init__(self, rag: Any, storage: Any, doc_ids: Set[str], repairing_chunks: Dict[str, List[str]]):
        self.rag = rag
        self.storage = storage
        self.doc_ids = doc_ids
        self.repairing_chunks = repairing_chunks  # doc id -> its chunks, while a repair deletes it
        # Off until the first repair: a listed document read from disk can say complete while its
        # data never reached disk, and a flush now would not write it.
        self.confirming = False
        self.repairing = False

    @classmethod
    async def of(cls, rag: Any) -> "InFlight":
        """The rag's record (one per LightRAG instance), read from the knowledge base the first time."""
        lightrag = rag.lightrag
        journal = getattr(lightrag, "ragopt_in_flight", None)
        if journal is None:
            storage = await kv_namespace(lightrag, NAMESPACE)
            record = await storage.get_by_id(KEY)
            record = record or {}
            journal = lightrag.ragopt_in_flight = cls(rag, storage, set(record.get("doc_ids", [])),
                                                      dict(record.get("repairing_chunks", {})))
            wrap_flush_all(lightrag, lambda flush: functools.partial(journal.around_flush, flush))
        return journal

    async def _save(self) -> None:
        await self.storage.upsert({KEY: {"doc_ids": sorted(self.doc_ids), "repairing_chunks": self.repairing_chunks}})
        await self.storage.index_done_callback()

    async def mark(self, doc_ids: Iterable[str]) -> None:
        """Put the documents not yet fully processed on the list, on disk, before their work starts."""
        doc_ids = sorted(set(doc_ids) - self.doc_ids)
        records = await self.rag.lightrag.doc_status.get_by_ids(doc_ids)
        started = {d for d, record in zip(doc_ids, records) if not fully_processed(record)}
        if started:
            self.doc_ids |= started
            await self._save()

    async def around_flush(self, flush: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """LightRAG's full flush; the documents complete before it began then come off the list."""
        if self.repairing:
            return  # adelete_by_doc_id flushes after every deletion; repair flushes once, after all of them
        if not self.confirming:
            return await flush(*args, **kwargs)
        listed = sorted(self.doc_ids)
        records = await self.rag.lightrag.doc_status.get_by_ids(listed)
        complete = {d for d, record in zip(listed, records) if fully_processed(record)}
        failures = storage_files.write_failures
        await flush(*args, **kwargs)
        if complete and storage_files.write_failures == failures:
            self.doc_ids -= complete
            await self._save()

    async def flush(self) -> None:
        """A full flush now, so the documents completed last come off the list (end of an ingest call)."""
        await flush_all(self.rag.lightrag)

    async def repair(self) -> List[str]:
        """Delete and queue again each half-merged document (module docstring); returns their ids."""
        lightrag = self.rag.lightrag
        if (await pipeline_status(lightrag)).get("busy"):
            logger.warning("LightRAG's pipeline is busy (another ingestion?): half-merged documents are not repaired now")
            return []
        from raganything.base import DocStatus  # LightRAG's statuses and RAG-Anything's HANDLING

        unfinished = await lightrag.doc_status.get_docs_by_statuses(
            [DocStatus.PENDING, DocStatus.PROCESSING, DocStatus.FAILED, DocStatus.HANDLING])
        ids = sorted(self.doc_ids | set(unfinished) | set(self.repairing_chunks))
        records = dict(zip(ids, await lightrag.doc_status.get_by_ids(ids)))
        # A repair killed before its flush may have left no status record: the saved chunks stand for it.
        records = {d: r or ({"status": "processing", "file_path": ""} if d in self.repairing_chunks else None)
                   for d, r in records.items()}
        footprints = await _footprints(lightrag, {d: r for d, r in records.items() if r}, self.repairing_chunks) if ids else {}
        to_repair = [
            d for d in ids
            if records[d] is not None and not _is_duplicate_marker(d, records[d]) and footprints[d][0]
            and (records[d].get("status") in UNFINISHED or d in self.doc_ids or d in self.repairing_chunks)
        ]
        if to_repair:
            # Write-ahead: the chunks about to be deleted, for a repair killed before its flush.
            self.repairing_chunks = {d: sorted(footprints[d][0]) for d in to_repair}
            await self._save()
        self.repairing = True
        try:
            for doc_id in to_repair:
                await _delete_and_queue_again(lightrag, self.rag, doc_id, records[doc_id], *footprints[doc_id])
        finally:
            self.repairing = False
        if to_repair:
            await flush_all(lightrag)
            logger.warning("repaired %d document(s) a killed or cancelled run left half-merged: %s",
                           len(to_repair), ", ".join(to_repair))
        if self.doc_ids or self.repairing_chunks:
            # Only now that the repairs are on disk (a kill before this repairs again from the files).
            # Repaired ones are queued again and go back on the list with their batch.
            self.doc_ids.clear()
            self.repairing_chunks = {}
            await self._save()
        self.confirming = True
        return to_repair


def _is_duplicate_marker(doc_id: str, record: Dict[str, Any]) -> bool:
    """LightRAG's failed "dup-" records stand for a re-insert; they have no data."""
    return doc_id.startswith("dup-") or bool((record.get("metadata") or {}).get("is_duplicate"))


Footprint = Tuple[Set[str], Set[str], Set[Tuple[str, str]]]


async def _footprints(lightrag: Any, records: Dict[str, Dict[str, Any]],
                      saved_chunks: Dict[str, List[str]]) -> Dict[str, Footprint]:
    """doc id -> (its chunks, its entities, its relations as sorted pairs), from every store that names
    them and from the chunks a killed repair saved."""
    graph = lightrag.chunk_entity_relation_graph
    nodes, edges = await graph.get_all_nodes(), await graph.get_all_edges()
    named = sorted({c for item in nodes + edges for c in source_chunks(item)})
    owner = {c: (row or {}).get("full_doc_id") for c, row in zip(named, await lightrag.text_chunks.get_by_ids(named))}
    footprints: Dict[str, Footprint] = {}
    for doc_id, record in records.items():
        chunks = set(record.get("chunks_list") or []) | {c for c, d in owner.items() if d == doc_id}
        chunks |= set(saved_chunks.get(doc_id, ()))
        listed_entities = await lightrag.full_entities.get_by_id(doc_id) or {}
        listed_relations = await lightrag.full_relations.get_by_id(doc_id) or {}
        entities = set(listed_entities.get("entity_names") or []) | {str(n["id"]) for n in nodes if source_chunks(n) & chunks}
        relations = {tuple(sorted(p)) for p in listed_relations.get("relation_pairs") or []}
        relations |= {tuple(sorted((str(e["source"]), str(e["target"])))) for e in edges if source_chunks(e) & chunks}
        footprints[doc_id] = (chunks, entities, relations)
    return footprints


async def _delete_and_queue_again(lightrag: Any, rag: Any, doc_id: str, record: Dict[str, Any], chunks: Set[str],
                                  entities: Set[str], relations: Set[Tuple[str, str]]) -> None:
    content = await lightrag.full_docs.get_by_id(doc_id)
    # adelete_by_doc_id deletes what these three records list.
    if entities:
        await lightrag.full_entities.upsert({doc_id: {"entity_names": sorted(entities), "count": len(entities)}})
    if relations:
        await lightrag.full_relations.upsert({doc_id: {"relation_pairs": sorted(relations), "count": len(relations)}})
    await lightrag.doc_status.upsert({doc_id: {**record, "chunks_list": sorted(chunks)}})
    await delete_document(rag, doc_id)
    if content and content.get("content"):
        await lightrag.apipeline_enqueue_documents(
            input=content["content"], ids=doc_id, file_paths=content.get("file_path") or record.get("file_path"))


async def prepare_resume(rag: Any) -> InFlight:
    """The rag's ``InFlight`` record, with what a killed run left half-merged repaired (ingest calls it first)."""
    journal = await InFlight.of(rag)
    await journal.repair()
    return journal
