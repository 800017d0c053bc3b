"""The PDF reader, on pypdfium2: one paragraph of text per page (pdfium's
rejoined hyphenations and Symbol-font bullets fixed, control characters
dropped) followed by the page's image objects. pdfium is not thread-safe, so
every pdfium call in the process, image decoding included, runs under one
lock."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import List

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from .blocks import Block, _paragraph
from .errors import CorruptDocumentError
from .images import _ImageWriter
from .text import _CONTROL_CHARS

_PDFIUM_LOCK = threading.Lock()

# pdfium marks a hyphen it removed at a line break with \x02 and joins the
# word; the Symbol font's bullet comes out in the private use area.
_PDF_TEXT_FIXES = str.maketrans({"\x02": None, "\uf0b7": "•"})


def _read_pdf(path: Path, images: _ImageWriter) -> List[Block]:
    blocks: List[Block] = []
    with _PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise CorruptDocumentError(f"{path} is not a valid PDF: {exc}") from exc
        try:
            for page_idx in range(len(pdf)):
                page = pdf[page_idx]
                text = page.get_textpage().get_text_bounded().translate(_PDF_TEXT_FIXES)
                text = _CONTROL_CHARS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
                text = "\n".join(line.rstrip() for line in text.split("\n")).strip()
                if text:
                    blocks.append(_paragraph(text, page_idx))
                for image in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE]):
                    if images.wants(*image.get_px_size()):
                        load = lambda: image.get_bitmap(render=False).to_pil()
                        block = images.write(bytes(image.get_data()), load, page_idx)
                        if block:
                            blocks.append(block)
        except pdfium.PdfiumError as exc:
            raise CorruptDocumentError(f"{path} is not a valid PDF: {exc}") from exc
        finally:
            pdf.close()
    return blocks
