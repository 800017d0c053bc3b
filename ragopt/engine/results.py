"""The per-document table: one row per file, the same columns for ragopt and RAG-Anything's entry points.

Times are seconds since the batch started (``started_s``, ``done_s``) or
durations (the rest):

- ``done_s``: time to done since the batch started;
- ``processing_s``: time since the document's own processing began (ragopt:
  admission to the parse stage; RAG-Anything: its ``process_document_complete``
  call), to done;
- ``parse_s``, ``text_s``, ``multimodal_s``: the stages' own times.

``status`` is ok, failed or skipped; a failed row names its ``stage`` and
error. ``IngestResult.files`` and ``ragopt.measure.Run.docs`` both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

import pandas as pd

DOC_COLUMNS = [
    "file", "doc_id", "status", "stage", "error_type", "error", "cache_hit",
    "started_s", "done_s", "processing_s", "parse_s", "text_s", "multimodal_s",
]
STATUSES = ("ok", "failed", "skipped")


@dataclass
class IngestResult:
    """What one ``ingest`` call did, per file, plus the counters of its helpers."""

    files: pd.DataFrame
    wall_s: float
    cache_stats: Dict[str, Any] = field(default_factory=dict)
    memory_gate: Dict[str, Any] = field(default_factory=dict)
    batches: int = 1

    @property
    def ok(self) -> pd.DataFrame:
        return self.files[self.files["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        return self.files[self.files["status"] == "failed"]

    def counts(self) -> Dict[str, int]:
        return {status: int((self.files["status"] == status).sum()) for status in STATUSES}
