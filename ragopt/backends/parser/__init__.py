"""The offline default parser: PDF, DOCX, HTML, Markdown and plain text, no models.

RAG-Anything's MinerU and Docling parsers download models from a hub; this one
needs only pypdfium2, python-docx and BeautifulSoup, so ingestion runs offline.
Every entry point ends in :func:`parse_file`, which returns RAG-Anything's
content_list:

* ``{"type": "text", "text": str, "page_idx": int}``, plus ``"text_level": n``
  for a heading (Markdown ``#``, HTML ``<hN>``, DOCX "Heading N"/"Title").
  Paragraphs are packed into blocks of at most ``MAX_BLOCK_CHARS`` characters
  (longer ones are split at line, then word boundaries); a block never spans
  two pages.
* ``{"type": "table", "table_body": markdown pipe table, "table_caption": [...],
  "table_footnote": [], "page_idx": int}``.
* ``{"type": "image", "img_path": absolute path to a PNG, "image_caption": [],
  "image_footnote": [], "page_idx": int}``.

``page_idx`` is the zero-based PDF page; other formats have no pages and use 0.

Images (PDF image objects and DOCX inline pictures) are written to
``<output_dir>/images/<digest>.png``, named by a hash of the source image data,
so documents can share an output_dir and a rerun rewrites nothing. Images
smaller than ``MIN_IMAGE_SIDE`` pixels on a side, repeats of an image already
taken (logos on every page) and those past ``MAX_IMAGES_PER_DOCUMENT`` are
skipped, as are formats Pillow cannot decode (EMF/WMF). Vector drawings and
images in HTML are not extracted: HTML images are remote or absent, and
nothing here ever fetches a URL. Without an output_dir, no images are written.

Concurrency: parse_file is a picklable module-level function meant for a
ProcessPoolExecutor. pdfium is not thread-safe, so all pdfium calls in one
process are serialized by a lock; parallel PDF parsing needs processes, not
threads (RAG-Anything itself calls the parser from ``asyncio.to_thread``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Union

from .blocks import MAX_BLOCK_CHARS, Block, _pack_paragraphs
from .docx import _read_docx
from .errors import CorruptDocumentError, EmptyDocumentError, ParseError, UnsupportedFormatError
from .html import _read_html
from .images import MAX_IMAGES_PER_DOCUMENT, MIN_IMAGE_SIDE, _ImageWriter
from .pdf import _read_pdf
from .text import _read_text

__all__ = [
    "PARSER_NAME",
    "PARSER_VERSION",
    "TEXT_SUFFIXES",
    "HTML_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "MAX_BLOCK_CHARS",
    "MAX_IMAGES_PER_DOCUMENT",
    "MIN_IMAGE_SIDE",
    "Block",
    "ParseError",
    "EmptyDocumentError",
    "CorruptDocumentError",
    "UnsupportedFormatError",
    "parse_file",
]

PARSER_NAME = "ragopt"
# Bump whenever the content_list for an unchanged input changes: a content
# cache keys on it.
PARSER_VERSION = "1"

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
SUPPORTED_SUFFIXES = frozenset((".pdf", ".docx") + TEXT_SUFFIXES + HTML_SUFFIXES)

_READERS: Dict[str, Callable[[Path, _ImageWriter], List[Block]]] = {
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    **{suffix: _read_text for suffix in TEXT_SUFFIXES},
    **{suffix: _read_html for suffix in HTML_SUFFIXES},
}


def parse_file(
    path: Union[str, Path], output_dir: Union[str, Path, None] = None, **options: Any
) -> List[Block]:
    """Parse one document into RAG-Anything's content_list (see module docstring).

    ``options`` takes the keyword arguments RAG-Anything passes to parsers
    (method, lang, device, ...) and ignores them: there is no OCR or model to
    configure. Raises a :class:`ParseError` subclass for an unsupported
    suffix, an empty, corrupt or binary file, or a document without text.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    read = _READERS.get(suffix)
    if read is None:
        raise UnsupportedFormatError(
            f"{path}: unsupported file type '{suffix or '(no suffix)'}' "
            f"(supported: {', '.join(sorted(SUPPORTED_SUFFIXES))})"
        )
    if path.stat().st_size == 0:
        raise EmptyDocumentError(f"{path} is empty (0 bytes)")
    images = _ImageWriter(Path(output_dir) / "images" if output_dir else None)
    blocks = _pack_paragraphs(read(path, images))
    if not any(block["type"] in ("text", "table") for block in blocks):
        raise EmptyDocumentError(f"{path} has no extractable text")
    return blocks
