"""Was every document ingested exactly once? The doc-status records of a knowledge base against a corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List


def doc_status_check(working_dir: str | Path, files: List[Path]) -> Dict[str, Any]:
    """Lost and duplicated documents: the doc status records of a working dir against the corpus.

    Lost: a file with no processed record. Duplicated: a file with two
    records, or named by one of the failed "dup-" records LightRAG writes
    when a document is inserted again.
    """
    path = Path(working_dir) / "kv_store_doc_status.json"
    records = json.loads(path.read_text()) if path.is_file() else {}
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
