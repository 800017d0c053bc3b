"""The plain-text and Markdown reader, and the byte-level checks other readers
reuse: binary data (NUL bytes without a UTF-16 BOM, or too many control
characters) is rejected, text is decoded as UTF-16 by BOM, else UTF-8, else
cp1252, else ISO-8859-1, and split into paragraphs at blank lines; Markdown
adds ATX headings, GFM pipe tables and fenced code kept whole."""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import List

from .blocks import Block, _heading, _paragraph, _table_block
from .errors import CorruptDocumentError
from .images import _ImageWriter

# C0/C1 control characters other than tab and newline.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MAX_CONTROL_SHARE = 0.01


def _reject_binary(data: bytes, path: Path) -> None:
    # UTF-16 text is full of NUL bytes, so it is recognised by its BOM first.
    if b"\x00" in data and not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CorruptDocumentError(f"{path} looks like binary data, not text (it contains NUL bytes)")


def _decode_text(data: bytes, path: Path) -> str:
    """Decode UTF-16 (by BOM), UTF-8 (BOM stripped), else cp1252, else ISO-8859-1;
    normalize line endings and drop stray control characters."""
    _reject_binary(data, path)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ("utf-16",)
    else:
        # latin-1 decodes any byte string, so it comes last; cp1252 first keeps
        # its curly quotes and dashes out of the C1 control range.
        encodings = ("utf-8-sig", "cp1252", "latin-1")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise CorruptDocumentError(f"{path} is not valid UTF-16 text")
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    control_count = len(_CONTROL_CHARS.findall(text))
    if control_count > _MAX_CONTROL_SHARE * len(text):
        raise CorruptDocumentError(
            f"{path} looks like binary data, not text ({control_count} control characters)"
        )
    return _CONTROL_CHARS.sub("", text)


_FENCE = re.compile(r"^(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
_TABLE_DELIMITER_CELL = re.compile(r"^\s*:?-+:?\s*$")


def _table_cells(line: str) -> List[str]:
    row = line.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return re.split(r"(?<!\\)\|", row)


def _pipe_table_end(lines: List[str], start: int) -> int:
    """Index just past a GFM pipe table starting at ``start``, or 0 if none does."""
    if start + 1 >= len(lines) or "|" not in lines[start] or "|" not in lines[start + 1]:
        return 0
    delimiter = _table_cells(lines[start + 1])
    if len(delimiter) != len(_table_cells(lines[start])) or not all(
        _TABLE_DELIMITER_CELL.match(cell) for cell in delimiter
    ):
        return 0
    end = start + 2
    while end < len(lines) and "|" in lines[end] and lines[end].strip():
        end += 1
    return end


def _text_blocks(text: str, markdown: bool) -> List[Block]:
    """Paragraphs split at blank lines; in Markdown also ATX headings, pipe
    tables, and fenced code kept whole (its ``#`` lines are not headings)."""
    lines = text.split("\n")
    blocks: List[Block] = []
    paragraph: List[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append(_paragraph("\n".join(paragraph)))
            paragraph.clear()

    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if markdown:
            fence = _FENCE.match(stripped)
            heading = _ATX_HEADING.match(stripped)
            table_end = _pipe_table_end(lines, index)
            if fence:
                end = index + 1
                while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                    end += 1
                flush()
                blocks.append(_paragraph("\n".join(lines[index : end + 1])))
                index = end + 1
                continue
            if heading and heading.group(2):
                flush()
                blocks.append(_heading(heading.group(2), len(heading.group(1))))
                index += 1
                continue
            if table_end:
                flush()
                blocks.append(_table_block("\n".join(line.strip() for line in lines[index:table_end])))
                index = table_end
                continue
        if stripped:
            paragraph.append(lines[index].rstrip())
        else:
            flush()
        index += 1
    flush()
    return blocks


def _read_text(path: Path, images: _ImageWriter) -> List[Block]:
    text = _decode_text(path.read_bytes(), path)
    return _text_blocks(text, markdown=path.suffix.lower() == ".md")
