"""Was every document ingested exactly once? A knowledge base's records against a corpus, through
LightRAG's storage APIs, so the check holds for JSON files, Redis or PostgreSQL alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

async def doc_status_records(lightrag: Any) -> Dict[str, dict]:
    """Every document status record, as stored (raw dicts, RAG-Anything's fields included).

    RAG-Anything's status enum has LightRAG's values and its own "handling" (text in,
    multimodal stage running); storages filter on ``.value``.
    """
    from lightrag.base import DocStatus as LightRAGStatus
    from raganything.base import DocStatus

    statuses = list({s.value: s for s in (*LightRAGStatus, *DocStatus)}.values())
    ids = list(await lightrag.doc_status.get_docs_by_statuses(statuses))
    records = await lightrag.doc_status.get_by_ids(ids)
    return {doc_id: record for doc_id, record in zip(ids, records) if record}


def doc_status_check(records: Dict[str, dict], files: List[Path]) -> Dict[str, Any]:
    """Lost and duplicated documents: status records against the corpus files.

    Lost: a file with no processed record. Duplicated: a file with two
    records, or named by one of the failed "dup-" records LightRAG writes
    when a document is inserted again.
    """
    records = {doc_id: {**r, "status": _status(r)} for doc_id, r in records.items()}
    by_file: Dict[str, List[dict]] = {}
    for doc_id, record in records.items():
        name = Path(str(record.get("file_path", ""))).name
        by_file.setdefault(name, []).append({"doc_id": doc_id, **record})
    names = [f.name for f in files]
    lost = [n for n in names if not any(str(r.get("status")) == "processed" for r in by_file.get(n, []))]
    dup_records = [k for k in records if k.startswith("dup-")]
    duplicated = sorted({n for n in names if len(by_file.get(n, [])) > 1}
                        | {Path(str(records[k].get("file_path") or k)).name for k in dup_records})
    failed_records = [k for k, r in records.items() if str(r.get("status")) == "failed"]
    return {
        "records": len(records),
        "lost_docs": len(lost),
        "lost": lost[:10],
        "duplicate_docs": len(duplicated),
        "duplicated": duplicated[:10],
        "dup_records": len(dup_records),
        "failed_records": len(failed_records),
    }


def _status(record: dict) -> str:
    """A record's status as text: storages that keep records in memory hold the enum itself."""
    status = record.get("status")
    return str(getattr(status, "value", status))


async def missing_chunks(lightrag: Any, records: Dict[str, dict]) -> List[str]:
    """Chunk ids a processed document lists that its knowledge base does not hold (data written after status)."""
    listed = [c for r in records.values() if _status(r) == "processed" for c in r.get("chunks_list") or []]
    stored = await lightrag.text_chunks.get_by_ids(listed) if listed else []
    return [chunk for chunk, value in zip(listed, stored) if value is None]


def inspect_knowledge_base(config: Any, working_dir: str | Path, files: List[Path]) -> Dict[str, Any]:
    """Open the knowledge base a run left (its config's storages, at ``working_dir``) and check it:
    the doc-status check, chunks missing behind processed records, and the graph's signature."""
    from ragopt.aio import run_sync
    from ragopt.compat.raganything import ensure_initialized
    from ragopt.engine.build import build_rag
    from ragopt.engine.release import arelease_rag
    from ragopt.measure.graphs import stored_graph_signature

    rag = build_rag(config, working_dir)

    async def inspect() -> Dict[str, Any]:
        await ensure_initialized(rag)
        try:
            records = await doc_status_records(rag.lightrag)
            return {**doc_status_check(records, files), "missing_chunks": len(await missing_chunks(rag.lightrag, records)),
                    "graph": await stored_graph_signature(rag.lightrag)}
        finally:
            await arelease_rag(rag)

    return run_sync(inspect())
