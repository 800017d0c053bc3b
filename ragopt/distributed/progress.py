"""A batch's file rows, kept up to date from the document events the engine dispatches.

The engine tells the rag's CallbackManager of every finished document (ok,
failed, skipped); this callback turns each into the job's row for that file,
with errors naming the file as submitted, and hands the changed rows over to
be written to Redis (``take``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from raganything.callbacks import ProcessingCallback


class FileProgress(ProcessingCallback):
    """The rows of one batch's files (``paths``: local path -> row index); ``take`` hands over the changed ones."""

    def __init__(self, paths: Dict[str, int], files: list):
        self.paths, self.files, self.changed = paths, files, {}

    def on_document_complete(self, file_path: str = "", stage: Optional[str] = None, **_: Any) -> None:
        self.record(file_path, "ok", stage, None)

    def on_document_error(self, file_path: str = "", stage: Optional[str] = None, error: Any = None, **_: Any) -> None:
        self.record(file_path, "failed", stage, error)

    def on_document_skipped(self, file_path: str = "", stage: Optional[str] = None, error: Any = None, **_: Any) -> None:
        self.record(file_path, "skipped", stage, error)

    def record(self, path: Any, status: str, stage: Optional[str], error: Optional[str]) -> None:
        index = self.paths.get(str(path))
        if index is not None:
            name = self.files[index]["file"]
            error = None if error is None else str(error).replace(str(path), name)  # the file as submitted
            self.files[index] = {**self.files[index], "status": status, "stage": stage, "error": error}
            self.changed[index] = self.files[index]

    def take(self) -> Dict[int, dict]:
        changed, self.changed = self.changed, {}
        return changed
