"""ragopt's offline parser as a RAG-Anything parser, registered by name.

Kept apart from ``ragopt.backends.parser`` so that parse worker processes,
which only call ``parse_file``, never import RAG-Anything and LightRAG.
"""

from __future__ import annotations

from typing import Set

from raganything.parser import Parser, register_parser

from ragopt.backends import parser as offline
from ragopt.backends.parser import HTML_SUFFIXES, PARSER_NAME, TEXT_SUFFIXES


class OfflineParser(Parser):
    """RAG-Anything parser over :func:`ragopt.backends.parser.parse_file` (looked up at call time); every method dispatches by suffix.

    The format sets tell RAG-Anything's BatchParser which files to pick up.
    parse_image raises UnsupportedFormatError rather than NotImplementedError,
    which would make RAG-Anything fall back to MinerU (and its model download).
    """

    OFFICE_FORMATS = {".docx"}
    IMAGE_FORMATS: Set[str] = set()
    TEXT_FORMATS = set(TEXT_SUFFIXES)
    HTML_FORMATS = set(HTML_SUFFIXES)

    def check_installation(self) -> bool:
        # The libraries are imported with this module: if it loaded, they are there.
        return True

    def parse_document(self, file_path, method="auto", output_dir=None, lang=None, **kwargs):
        return offline.parse_file(file_path, output_dir, **kwargs)

    def parse_pdf(self, pdf_path, output_dir=None, method="auto", lang=None, **kwargs):
        return offline.parse_file(pdf_path, output_dir, **kwargs)

    def parse_office_doc(self, doc_path, output_dir=None, lang=None, **kwargs):
        return offline.parse_file(doc_path, output_dir, **kwargs)

    def parse_text_file(self, text_path, output_dir=None, lang=None, **kwargs):
        return offline.parse_file(text_path, output_dir, **kwargs)

    def parse_html(self, html_path, output_dir=None, lang=None, **kwargs):
        return offline.parse_file(html_path, output_dir, **kwargs)

    def parse_image(self, image_path, output_dir=None, lang=None, **kwargs):
        return offline.parse_file(image_path, output_dir, **kwargs)


def register() -> str:
    """Register OfflineParser with RAG-Anything under PARSER_NAME; safe to repeat."""
    register_parser(PARSER_NAME, OfflineParser)
    return PARSER_NAME
