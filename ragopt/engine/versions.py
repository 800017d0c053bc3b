"""Which document each file holds in a knowledge base, so an edited file replaces its previous version.

Kept in a key-value namespace (``ragopt_sources``) of the knowledge base's
own storage kind, so it lives and travels with the knowledge base (a JSON
file beside LightRAG's, or keys on the same Redis). A path whose bytes
changed since it was ingested has its previous document deleted through
LightRAG's own deletion API (``adelete_by_doc_id``: entities and relations
only that document supported go; shared ones are rebuilt from the remaining
chunks' cached extractions, no extraction LLM call), unless another path still
holds the same content; then the new version is ingested. With
``remove_missing``, documents whose files are gone are deleted the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Set

from ragopt.compat.lightrag import kv_namespace

NAMESPACE = "ragopt_sources"
INDEX = "__paths__"  # key-value stores cannot list their keys: the paths recorded so far


async def delete_document(rag: Any, doc_id: str) -> None:
    """Delete ``doc_id`` from the knowledge base through LightRAG's own deletion (pipeline idle)."""
    result = await rag.lightrag.adelete_by_doc_id(doc_id)
    if result.status not in ("success", "not_found"):
        raise RuntimeError(f"LightRAG could not delete the previous version {doc_id}: {result.status} {result.message}")


class SourceVersions:
    """The knowledge base's path -> (document id, content hash) records."""

    def __init__(self, storage: Any, index: Set[str]):
        self.storage, self.index, self.deleted = storage, index, []

    @classmethod
    async def open(cls, rag: Any) -> "SourceVersions":
        storage = await kv_namespace(rag.lightrag, NAMESPACE)
        index = await storage.get_by_id(INDEX)
        return cls(storage, set((index or {}).get("paths", [])))

    async def replace_previous(self, rag: Any, current: Dict[str, str], remove_missing: bool) -> List[str]:
        """Delete the documents that the files in ``current`` (path -> new document id) replace, and with
        ``remove_missing`` those of recorded paths whose files are gone; returns the deleted ids."""
        known = sorted(self.index | set(current))
        records = dict(zip(known, await self.storage.get_by_ids(known)))
        gone = {p for p in self.index - set(current) if not Path(p).exists()} if remove_missing else set()
        stale = {r["doc_id"] for p, r in records.items() if r and (p in gone or (p in current and r["doc_id"] != current[p]))}
        kept = set(current.values()) | {r["doc_id"] for p, r in records.items() if r and p not in current and p not in gone}
        for doc_id in sorted(stale - kept):
            await delete_document(rag, doc_id)
            self.deleted.append(doc_id)
        if gone:
            await self.storage.delete(sorted(gone))
            self.index -= gone
        return self.deleted

    async def record(self, path: str, doc_id: str, digest: str) -> None:
        await self.storage.upsert({path: {"doc_id": doc_id, "sha256": digest}})
        self.index.add(path)

    async def flush(self) -> None:
        await self.storage.upsert({INDEX: {"paths": sorted(self.index)}})
        await self.storage.index_done_callback()
