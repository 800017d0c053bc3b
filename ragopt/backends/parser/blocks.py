"""Content_list blocks and the format-independent steps on them: constructors
for text, heading and table blocks, the packing of plain paragraphs into blocks
of at most ``MAX_BLOCK_CHARS`` characters (splitting longer ones at line, then
word boundaries), and the whitespace collapsing that table cells and HTML text
share."""

from __future__ import annotations

import textwrap
from typing import Any, Dict, List

MAX_BLOCK_CHARS = 2000

Block = Dict[str, Any]


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _paragraph(text: str, page_idx: int = 0) -> Block:
    return {"type": "text", "text": text, "page_idx": page_idx}


def _heading(text: str, level: int) -> Block:
    return {"type": "text", "text": text, "text_level": level, "page_idx": 0}


def _table(rows: List[List[str]], caption: str = "") -> Block:
    """A table block from rows of cell texts; the first row is the header."""
    width = max(len(row) for row in rows)
    lines = []
    for index, row in enumerate(rows):
        cells = [_collapse(cell).replace("|", "\\|") for cell in row] + [""] * (width - len(row))
        lines.append("| " + " | ".join(cells) + " |")
        if index == 0:
            lines.append("|" + " --- |" * width)
    return _table_block("\n".join(lines), caption)


def _table_block(body: str, caption: str = "") -> Block:
    return {
        "type": "table",
        "table_body": body,
        "table_caption": [caption] if caption else [],
        "table_footnote": [],
        "page_idx": 0,
    }


def _is_plain(block: Block) -> bool:
    return block["type"] == "text" and "text_level" not in block


def _pack_paragraphs(blocks: List[Block]) -> List[Block]:
    """Merge consecutive plain paragraphs of one page into blocks of up to
    MAX_BLOCK_CHARS, splitting longer paragraphs first; headings, tables and
    images stay where they are and end the current block."""
    packed: List[Block] = []
    for block in blocks:
        if not _is_plain(block):
            packed.append(block)
            continue
        for piece in _split_oversized(block["text"]):
            last = packed[-1] if packed else None
            if (
                last is not None
                and _is_plain(last)
                and last["page_idx"] == block["page_idx"]
                and len(last["text"]) + 2 + len(piece) <= MAX_BLOCK_CHARS
            ):
                last["text"] += "\n\n" + piece
            else:
                packed.append(_paragraph(piece, block["page_idx"]))
    return packed


def _split_oversized(text: str) -> List[str]:
    if len(text) <= MAX_BLOCK_CHARS:
        return [text]
    lines: List[str] = []
    for line in text.split("\n"):
        lines.extend(textwrap.wrap(line, MAX_BLOCK_CHARS) if len(line) > MAX_BLOCK_CHARS else [line])
    pieces = [lines[0]]
    for line in lines[1:]:
        if len(pieces[-1]) + 1 + len(line) <= MAX_BLOCK_CHARS:
            pieces[-1] += "\n" + line
        else:
            pieces.append(line)
    return pieces
