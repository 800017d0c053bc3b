"""The DOCX reader, on python-docx: body paragraphs and tables in document
order, "Title" and "Heading N" styles as headings, real grids as table blocks
(one-row or one-column tables, Word's text boxes and callouts, as paragraphs),
and inline pictures, DrawingML and VML alike, as images."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import List

import docx
from docx.table import Table
from PIL import Image

from .blocks import Block, _heading, _paragraph, _table
from .errors import CorruptDocumentError
from .images import _ImageWriter

_DOCX_IMAGE_REFS = ".//a:blip/@r:embed | .//*[local-name()='imagedata']/@*[local-name()='id']"


def _heading_level(style_name: str) -> int:
    if style_name == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style_name)
    return int(match.group(1)) if match else 0


def _read_docx(path: Path, images: _ImageWriter) -> List[Block]:
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # python-docx raises zip, XML and key errors alike
        raise CorruptDocumentError(f"{path} is not a valid DOCX: {exc}") from exc
    # Paragraph.style looks the style up in the styles part on every call,
    # which dominates parsing time on long documents; map ids once instead.
    style_names = {style.style_id: style.name for style in document.styles}
    related_parts = document.part.related_parts
    blocks: List[Block] = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.extend(_table_or_paragraph([_docx_row(row) for row in item.rows]))
            continue
        text = item.text.strip()
        if text:
            level = _heading_level(style_names.get(item._p.style, ""))
            blocks.append(_heading(text, level) if level else _paragraph(text))
        for rel_id in item._p.xpath(_DOCX_IMAGE_REFS):
            part = related_parts.get(rel_id)
            if part is None:
                continue
            blob = part.blob
            try:
                size = Image.open(io.BytesIO(blob)).size
            except (OSError, Image.DecompressionBombError):
                continue
            if images.wants(*size):
                block = images.write(blob, lambda: Image.open(io.BytesIO(blob)), 0)
                if block:
                    blocks.append(block)
    return blocks


def _table_or_paragraph(rows: List[List[str]]) -> List[Block]:
    """A table block for a grid of at least two rows and columns; a one-row or
    one-column table (a Word text box or callout) is read as a paragraph."""
    rows = [row for row in rows if any(row)]
    if len(rows) >= 2 and max(len(row) for row in rows) >= 2:
        return [_table(rows)]
    text = "\n\n".join(cell for row in rows for cell in row if cell)
    return [_paragraph(text)] if text else []


def _docx_row(row) -> List[str]:
    cells: List[str] = []
    previous = None
    for cell in row.cells:
        # A horizontally merged cell is repeated once per grid column it spans.
        if cell is not previous:
            cells.append(cell.text.strip())
        previous = cell
    return cells
