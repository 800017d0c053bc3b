"""A parser of "the user's own" registered with RAG-Anything, standing in for MinerU or Docling
(which need model weights from a hub): it records each call and its options, then parses offline.

Importable by module path, so ragopt's spawned parse workers register it again from there.
Calls are appended as JSON lines to the file named by ``STANDIN_PARSER_LOG`` (inherited by workers).
"""

from __future__ import annotations

import json
import os

from raganything.parser import Parser

from ragopt.backends.parser import parse_file


def _record(method: str, path, options: dict) -> None:
    log = os.environ.get("STANDIN_PARSER_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps({"method": method, "path": str(path), "pid": os.getpid(),
                                  "options": {k: v for k, v in options.items() if k != "output_dir"}}) + "\n")


class StandInParser(Parser):
    """Formats as MinerU's office/pdf/text entry points take them; content from ragopt's offline parser."""

    __version__ = "1.0-test"
    OFFICE_FORMATS = {".docx"}
    TEXT_FORMATS = {".txt", ".md"}
    HTML_FORMATS = {".html"}

    def check_installation(self) -> bool:
        return True

    def parse_pdf(self, pdf_path, output_dir=None, method="auto", **kwargs):
        _record("parse_pdf", pdf_path, {"method": method, **kwargs})
        return parse_file(pdf_path, output_dir)

    def parse_office_doc(self, doc_path, output_dir=None, **kwargs):
        _record("parse_office_doc", doc_path, kwargs)
        return parse_file(doc_path, output_dir)

    def parse_html(self, html_path, output_dir=None, **kwargs):
        _record("parse_html", html_path, kwargs)
        return parse_file(html_path, output_dir)

    def parse_document(self, file_path, method="auto", output_dir=None, **kwargs):
        _record("parse_document", file_path, {"method": method, **kwargs})
        return parse_file(file_path, output_dir)

    def parse_image(self, image_path, output_dir=None, **kwargs):
        _record("parse_image", image_path, kwargs)
        return parse_file(image_path, output_dir)


class GpuStandInParser(StandInParser):
    """The same, declared a GPU parser: one parse process per visible GPU, each pinned to its own."""

    uses_gpu = True


def calls(log) -> list:
    """The calls recorded in ``log`` so far."""
    return [json.loads(line) for line in open(log, encoding="utf-8")] if os.path.exists(log) else []
