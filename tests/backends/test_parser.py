"""Tests for the offline default parser (ragopt.backends.parser)."""

import random
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image
from raganything import RAGAnything, RAGAnythingConfig
from raganything.batch_parser import BatchParser
from raganything.parser import get_parser

from ragopt.backends.parser import (
    MAX_BLOCK_CHARS,
    MAX_IMAGES_PER_DOCUMENT,
    MIN_IMAGE_SIDE,
    PARSER_NAME,
    SUPPORTED_SUFFIXES,
    CorruptDocumentError,
    EmptyDocumentError,
    ParseError,
    UnsupportedFormatError,
    parse_file,
)
from ragopt.backends.raganything_parser import OfflineParser, register

from corpora import DEV_CORPUS as CORPUS, SAMPLE, TEST_DATA, needs_dev_corpus  # noqa: E402  (tests/ is on sys.path)

CORPUS_FILES = sorted(path.name for path in CORPUS.iterdir()) if CORPUS.is_dir() else []
PROCESS_POOL_PDFS = [TEST_DATA / "nist_fips199.pdf", SAMPLE / "nist_sp800-145_cloud_definition.pdf",
                     TEST_DATA / "the_man_without_a_body_1877.pdf"]


def _documented_chars():
    """Extractable characters per file, as measured by other tools in SOURCES.md."""
    counts = {}
    if not CORPUS.is_dir():
        return counts
    for line in (CORPUS / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `([^`]+)` \|.*?([\d,]+) chars", line)
        if row:
            counts[row.group(1)] = int(row.group(2).replace(",", ""))
    return counts


DOCUMENTED_CHARS = _documented_chars()


@pytest.fixture(scope="session")
def output_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("parser_output")


@pytest.fixture(scope="session")
def parsed(output_dir):
    """Parse each corpus file once per session: name -> content_list."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = parse_file(name if isinstance(name, Path) else CORPUS / name, output_dir)
        return cache[name]

    return get


def _text(blocks):
    return "\n".join(block.get("text", "") + block.get("table_body", "") for block in blocks)


def _of_type(blocks, kind):
    return [block for block in blocks if block["type"] == kind]


# ---------------------------------------------------------------- corpus


@needs_dev_corpus
def test_sources_lists_every_other_corpus_file():
    assert set(DOCUMENTED_CHARS) == set(CORPUS_FILES) - {"SOURCES.md"}


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_file_parses_to_well_formed_text(name, parsed):
    blocks = parsed(name)
    text = _text(blocks)
    assert len(text) > 1000
    # Whitespace and markup differ between extractors, never most of the text.
    assert len(text) >= 0.85 * DOCUMENTED_CHARS.get(name, 0)
    for block in blocks:
        assert block["type"] in ("text", "table", "image")
        assert isinstance(block["page_idx"], int) and block["page_idx"] >= 0
        if block["type"] == "text":
            assert block["text"].strip() and "\r" not in block["text"]
            assert len(block["text"]) <= MAX_BLOCK_CHARS
        if block["type"] == "image":
            assert Path(block["img_path"]).is_absolute() and Path(block["img_path"]).is_file()


@needs_dev_corpus
def test_pdf_text_has_pages_and_no_pdfium_markers(parsed):
    blocks = parsed("nist_fips199.pdf")
    assert {block["page_idx"] for block in blocks} == set(range(13))
    text = _text(blocks)
    assert "FIPS Publication 199" in text
    assert not re.search(r"[\x00-\x08\x0b-\x1f]", text)
    # pdfium's \x02 marks a removed line-end hyphen; the word must be whole.
    assert "corpus consists" in _text(parsed("acl2020_s2orc.pdf"))


@needs_dev_corpus
def test_pdf_images_are_pngs_within_size_and_count_limits(parsed):
    for name in ("acl2020_s2orc.pdf", "clinsci_2014_ace_n_domain_inhibitors.pdf"):
        images = _of_type(parsed(name), "image")
        assert 1 <= len(images) <= MAX_IMAGES_PER_DOCUMENT
        for block in images:
            with Image.open(block["img_path"]) as image:
                assert image.format == "PNG"
                assert min(image.size) >= MIN_IMAGE_SIDE
    # 291 embedded images: the cap, not the document, decides the count.
    assert len(_of_type(parsed("fedramp_oscal_content_guide_rev5.pdf"), "image")) == MAX_IMAGES_PER_DOCUMENT
    assert [block["page_idx"] for block in _of_type(parsed("acl2020_s2orc.pdf"), "image")] == [0, 4, 6, 13]


@needs_dev_corpus
def test_docx_image_tables_and_headings(parsed):
    handbook = parsed("doj_ust_chapter13_trustee_handbook_2012.docx")
    # Two references to one picture give one image block.
    [image] = _of_type(handbook, "image")
    with Image.open(image["img_path"]) as picture:
        assert picture.format == "PNG"
    assert len(_of_type(handbook, "table")) == 2
    assert any(block.get("text_level") == 1 for block in handbook)

    [usability] = _of_type(parsed("nist_sp800-63b_usability_table.docx"), "table")
    lines = usability["table_body"].split("\n")
    assert lines[0].startswith("| Usability Considerations | Memorized secrets |")
    assert lines[1] == "|" + " --- |" * 10
    assert len(lines) == 25  # header, delimiter, 23 body rows

    overview_tables = _of_type(parsed("fedramp_oscal_overview.docx"), "table")
    assert [table["table_body"].split(" | ")[0] for table in overview_tables] == ["| Term", "| Term"]


@needs_dev_corpus
def test_docx_single_column_tables_stay_text_with_line_breaks(parsed):
    blocks = parsed("fedramp_working_with_oscal.docx")
    assert not _of_type(blocks, "table")
    assert re.search(r"<back-matter>\n", _text(blocks))


@needs_dev_corpus
def test_html_keeps_content_and_tables_and_drops_noise(parsed):
    blocks = parsed("wikipedia_duck.html")
    [infobox] = _of_type(blocks, "table")
    assert "| Family: | Anatidae |" in infobox["table_body"]
    assert {"type": "text", "text": "Etymology", "text_level": 2, "page_idx": 0} in blocks
    text = _text(blocks)
    assert "Duck is the common name for numerous species of waterfowl" in text
    for noise in ("RLCONF", "function(", "Main page", "Authority control", "Jump to content"):
        assert noise not in text


@needs_dev_corpus
def test_html_honours_declared_iso_8859_1_charset(parsed):
    assert "Archæological" in _text(parsed("passamaquoddy_folk_lore.html"))


@needs_dev_corpus
def test_markdown_pipe_tables_become_table_blocks(parsed):
    [sources] = _of_type(parsed("SOURCES.md"), "table")
    assert sources["table_body"].startswith("| File | Bytes | Format |")
    assert sources["table_body"].count("\n") == len(DOCUMENTED_CHARS) + 1
    # GFM tables without outer pipes count too.
    [aal] = _of_type(parsed("nist_sp800-63b_sec4_aal.md"), "table")
    assert aal["table_body"].startswith("Requirement | AAL1 | AAL2 | AAL3")


def test_markdown_headings_fences_and_non_tables(tmp_path):
    path = tmp_path / "doc.md"
    path.write_text(
        "# Title\n\nIntro a | b, not a table.\n\n```\n# not a heading\n\nstill code\n```\n\n"
        "## Section ##\n\n| x | y |\n|:--|--:|\n| 1 | 2 |\n\ntail\n",
        encoding="utf-8",
    )
    assert parse_file(path, tmp_path) == [
        {"type": "text", "text": "Title", "text_level": 1, "page_idx": 0},
        {"type": "text", "text": "Intro a | b, not a table.\n\n```\n# not a heading\n\nstill code\n```", "page_idx": 0},
        {"type": "text", "text": "Section", "text_level": 2, "page_idx": 0},
        {"type": "table", "table_body": "| x | y |\n|:--|--:|\n| 1 | 2 |", "table_caption": [],
         "table_footnote": [], "page_idx": 0},
        {"type": "text", "text": "tail", "page_idx": 0},
    ]


def test_long_text_is_split_at_line_and_word_boundaries(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(("word " * 1000) + "\n" + "line\n" * 10, encoding="utf-8")
    blocks = parse_file(path, tmp_path)
    assert len(blocks) > 2
    assert all(len(block["text"]) <= MAX_BLOCK_CHARS for block in blocks)
    assert " ".join(" ".join(block["text"].split()) for block in blocks).split() == ["word"] * 1000 + ["line"] * 10


# ---------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    "name, data, expected",
    [
        ("bom.txt", "\ufeffCafé déjà vu, naïve façade.".encode("utf-8"), "Café déjà vu, naïve façade."),
        ("latin1.txt", "Crème brûlée à l'œil? No: crème brûlée, señor.".replace("œ", "oe").encode("iso-8859-1"),
         "Crème brûlée à l'oeil? No: crème brûlée, señor."),
        ("cp1252.md", "“Smart” quotes – and 5 €.".encode("cp1252"), "“Smart” quotes – and 5 €."),
    ],
)
def test_text_encodings_are_decoded(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    assert parse_file(path, tmp_path) == [{"type": "text", "text": expected, "page_idx": 0}]


def test_crlf_line_endings_are_normalized(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes("Première ligne\r\nseconde ligne\r\n\r\nÉté\r".encode("utf-8"))
    [block] = parse_file(path, tmp_path)
    assert block["text"] == "Première ligne\nseconde ligne\n\nÉté"


@needs_dev_corpus
def test_corpus_bom_crlf_french_text(parsed):
    text = _text(parsed("entre_nous_lectures_francaises_fr.txt"))
    assert "\ufeff" not in text and "\r" not in text
    assert re.search(r"[éèàçê]", text)


# ---------------------------------------------------------------- errors


def _image_only_pdf(path):
    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(200, 200)
    image = pdfium.PdfImage.new(pdf)
    image.set_bitmap(pdfium.PdfBitmap.from_pil(Image.new("RGB", (64, 48), (200, 30, 30))))
    image.set_matrix(pdfium.PdfMatrix().scale(64, 48))
    page.insert_obj(image)
    page.gen_content()
    pdf.save(path)
    pdf.close()


def _no_nul_random_bytes():
    return random.Random(1).randbytes(4096).replace(b"\x00", b"\x01")


BAD_FILES = [
    ("empty.txt", b"", EmptyDocumentError, "is empty (0 bytes)"),
    ("empty.pdf", b"", EmptyDocumentError, "is empty (0 bytes)"),
    ("blank.md", b"  \n\n\t\n", EmptyDocumentError, "has no extractable text"),
    ("truncated.pdf", (TEST_DATA / "nist_fips199.pdf").read_bytes()[:40000], CorruptDocumentError, "is not a valid PDF"),
    ("not_really.pdf", b"hello, I am text", CorruptDocumentError, "is not a valid PDF"),
    ("random.txt", random.Random(0).randbytes(4096), CorruptDocumentError, "binary"),
    ("random_without_nul.txt", _no_nul_random_bytes(), CorruptDocumentError, "binary"),
    ("random.html", random.Random(2).randbytes(4096), CorruptDocumentError, "binary"),
    ("broken.docx", b"PK\x03\x04 not a zip", CorruptDocumentError, "is not a valid DOCX"),
    ("notes.xyz", b"some text", UnsupportedFormatError, "unsupported file type '.xyz' (supported: .docx"),
    ("photo.png", b"\x89PNG\r\n\x1a\n", UnsupportedFormatError, "unsupported file type '.png'"),
]


@pytest.mark.parametrize("name, data, error, message", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_files_raise_a_parse_error_naming_the_file(tmp_path, name, data, error, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(error) as raised:
        parse_file(path, tmp_path)
    assert isinstance(raised.value, ParseError) and isinstance(raised.value, ValueError)
    assert name in str(raised.value) and message in str(raised.value)


def test_image_only_pdf_has_no_extractable_text(tmp_path):
    path = tmp_path / "scan.pdf"
    _image_only_pdf(path)
    with pytest.raises(EmptyDocumentError, match="scan.pdf has no extractable text"):
        parse_file(path, tmp_path)


# ---------------------------------------------------------------- processes and RAG-Anything


def test_parse_file_in_a_process_pool_matches_in_process(parsed, output_dir):
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(parse_file, path, output_dir) for path in PROCESS_POOL_PDFS]
        results = [future.result(timeout=60) for future in futures]
    assert results == [parsed(path) for path in PROCESS_POOL_PDFS]


def test_errors_cross_process_boundaries(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with ProcessPoolExecutor(max_workers=1) as pool:
        with pytest.raises(EmptyDocumentError, match="empty.txt is empty"):
            pool.submit(parse_file, path, tmp_path).result(timeout=60)


def test_register_is_idempotent_and_batch_parser_sees_our_formats():
    assert register() == register() == PARSER_NAME
    assert isinstance(get_parser(PARSER_NAME), OfflineParser)
    batch = BatchParser(parser_type=PARSER_NAME, show_progress=False)
    assert set(batch.get_supported_extensions()) == SUPPORTED_SUFFIXES


ENTRY_POINT_FILES = [
    "nist_sp800-145_cloud_definition.pdf",
    "fedramp_oscal_overview.docx",
    "sqlite_how_to_corrupt.html",
    "nist_sp800-63b_sec7_session.md",
    "christmas_carol_part5.txt",
]


async def test_raganything_parse_document_uses_our_parser(tmp_path):
    register()
    rag = RAGAnything(
        config=RAGAnythingConfig(parser=PARSER_NAME, working_dir=str(tmp_path / "rag"))
    )
    for name in ENTRY_POINT_FILES:
        content_list, doc_id = await rag.parse_document(str(SAMPLE / name), output_dir=str(tmp_path / "out"))
        assert doc_id and content_list == parse_file(SAMPLE / name, tmp_path / "out")
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(image)
    # Not NotImplementedError: that would make RAG-Anything fall back to MinerU.
    with pytest.raises(UnsupportedFormatError):
        await rag.parse_document(str(image), output_dir=str(tmp_path / "out"))
