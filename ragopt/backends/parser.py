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

import codecs
import hashlib
import io
import logging
import os
import re
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Union

import docx
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import PreformattedString
from docx.table import Table
from PIL import Image

PARSER_NAME = "ragopt"
# Bump whenever the content_list for an unchanged input changes: a content
# cache keys on it.
PARSER_VERSION = "1"

TEXT_SUFFIXES = (".txt", ".md")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
SUPPORTED_SUFFIXES = frozenset((".pdf", ".docx") + TEXT_SUFFIXES + HTML_SUFFIXES)

MAX_BLOCK_CHARS = 2000
MAX_IMAGES_PER_DOCUMENT = 20
MIN_IMAGE_SIDE = 32

Block = Dict[str, Any]
logger = logging.getLogger(__name__)

_PDFIUM_LOCK = threading.Lock()


class ParseError(ValueError):
    """A document that cannot be turned into content; the message names the file."""


class EmptyDocumentError(ParseError):
    """The file is empty or yields no text."""


class CorruptDocumentError(ParseError):
    """The file is not a valid document of the type its suffix claims."""


class UnsupportedFormatError(ParseError):
    """The file's suffix is not one this parser reads."""


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


# ---------------------------------------------------------------- blocks


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


# ---------------------------------------------------------------- images


_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


class _ImageWriter:
    """Writes a document's images as content-addressed PNGs and returns their
    image blocks; skips tiny, repeated and over-the-cap images."""

    def __init__(self, image_dir: Optional[Path]):
        self.image_dir = image_dir
        self.digests_taken: Set[str] = set()

    def wants(self, width: int, height: int) -> bool:
        return (
            self.image_dir is not None
            and len(self.digests_taken) < MAX_IMAGES_PER_DOCUMENT
            and min(width, height) >= MIN_IMAGE_SIDE
        )

    def write(self, source: bytes, load: Callable[[], Image.Image], page_idx: int) -> Optional[Block]:
        """Decode (via ``load``) and save the image whose encoded data is ``source``."""
        digest = hashlib.sha256(source).hexdigest()[:20]
        if digest in self.digests_taken:
            return None
        target = self.image_dir / f"{digest}.png"
        if not target.exists():
            try:
                image = load()
                if image.mode not in _PNG_MODES:
                    image = image.convert("RGB")
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
            except (OSError, ValueError, Image.DecompressionBombError, pdfium.PdfiumError) as exc:
                logger.debug("skipping undecodable image %s: %s", digest, exc)
                return None
            self.image_dir.mkdir(parents=True, exist_ok=True)
            # Write-then-rename, so a concurrent worker never sees half a file.
            handle, temp_name = tempfile.mkstemp(dir=self.image_dir, suffix=".part")
            with os.fdopen(handle, "wb") as temp_file:
                temp_file.write(buffer.getvalue())
            os.replace(temp_name, target)
        self.digests_taken.add(digest)
        return {
            "type": "image",
            "img_path": str(target.resolve()),
            "image_caption": [],
            "image_footnote": [],
            "page_idx": page_idx,
        }


# ---------------------------------------------------------------- plain text and Markdown

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


# ---------------------------------------------------------------- PDF

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


# ---------------------------------------------------------------- DOCX

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


# ---------------------------------------------------------------- HTML

_NOISE_TAGS = {"script", "style", "noscript", "template", "svg", "nav", "iframe", "button", "select"}
_NOISE_ROLES = {"navigation", "banner", "contentinfo", "search"}
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header",
    "hr", "li", "main", "ol", "p", "section", "summary", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "ul",
}


def _collapse(text: str) -> str:
    return " ".join(text.split())


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


_READERS: Dict[str, Callable[[Path, _ImageWriter], List[Block]]] = {
    ".pdf": _read_pdf,
    ".docx": _read_docx,
    **{suffix: _read_text for suffix in TEXT_SUFFIXES},
    **{suffix: _read_html for suffix in HTML_SUFFIXES},
}
