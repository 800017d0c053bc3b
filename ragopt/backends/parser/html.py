"""The HTML reader, on BeautifulSoup with lxml: the page's bytes are parsed so
its declared charset is honoured, scripts, navigation, hidden elements and
other noise are removed, and the DOM of ``<main>`` (else ``<body>``) is walked
in order into headings, paragraphs, verbatim ``<pre>`` blocks and data tables
(layout tables are read as ordinary text). Images are not extracted: nothing
here fetches a URL."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString

from .blocks import Block, _collapse, _heading, _paragraph, _table
from .images import _ImageWriter
from .text import _reject_binary

_NOISE_TAGS = {"script", "style", "noscript", "template", "svg", "nav", "iframe", "button", "select"}
_NOISE_ROLES = {"navigation", "banner", "contentinfo", "search"}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
    "hr", "li", "main", "ol", "p", "section", "summary", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "ul",
}


def _is_noise(tag: Tag) -> bool:
    return (
        tag.name in _NOISE_TAGS
        or tag.has_attr("hidden")
        or tag.get("aria-hidden") == "true"
        or tag.get("role") in _NOISE_ROLES
    )


def _html_data_table(table: Tag) -> Optional[Block]:
    """A table block for an innermost table of at least two rows and columns;
    None for layout tables, which are read as ordinary blocks."""
    if table.find("table") is not None:
        return None
    rows = []
    for row in table.find_all("tr"):
        cells = [_collapse(cell.get_text(" ")) for cell in row.find_all(["td", "th"], recursive=False)]
        if any(cells):
            rows.append(cells)
    if len(rows) < 2 or max(len(row) for row in rows) < 2:
        return None
    caption = table.find("caption")
    return _table(rows, _collapse(caption.get_text(" ")) if caption else "")


def _html_blocks(root: Tag) -> List[Block]:
    """Walk the DOM in order: headings, paragraphs (block elements end them,
    <br> breaks a line), <pre> verbatim, and data tables."""
    blocks: List[Block] = []
    lines: List[List[str]] = [[]]

    def flush() -> None:
        text = "\n".join(filter(None, (_collapse("".join(line)) for line in lines)))
        if text:
            blocks.append(_paragraph(text))
        lines[:] = [[]]

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if not isinstance(child, PreformattedString):  # comments, doctype
                    lines[-1].append(str(child))
            elif child.name == "br":
                lines.append([])
            elif child.name in _HEADING_TAGS:
                flush()
                text = _collapse(child.get_text(" "))
                if text:
                    blocks.append(_heading(text, _HEADING_TAGS[child.name]))
            elif child.name == "pre":
                flush()
                text = child.get_text().strip("\n")
                if text.strip():
                    blocks.append(_paragraph(text))
            elif child.name == "table" and (table := _html_data_table(child)):
                flush()
                blocks.append(table)
            elif child.name in _BLOCK_TAGS:
                flush()
                walk(child)
                flush()
            else:
                walk(child)

    walk(root)
    flush()
    return blocks


def _read_html(path: Path, images: _ImageWriter) -> List[Block]:
    data = path.read_bytes()
    _reject_binary(data, path)
    # Bytes, not text: BeautifulSoup honours the page's declared charset.
    soup = BeautifulSoup(data, "lxml")
    for tag in soup.find_all(_is_noise):
        if not tag.decomposed:  # not already gone with a noisy ancestor
            tag.decompose()
    return _html_blocks(soup.find("main") or soup.body or soup)
