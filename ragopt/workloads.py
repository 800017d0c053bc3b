"""Workloads: the committed sample corpus and generated corpora of any size.

``synthetic_corpus`` writes N small documents whose sentences mention entities
drawn from shared pools, so entities recur across documents and LightRAG's
merge stage does real work, as it does on a real collection. Every fifth
document is a Markdown file with a pipe table and every seventh a DOCX with a
table and an image, so the multimodal stage is part of every figure.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import List

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "data" / "sample"

_FIRST = ["Ada", "Brian", "Chen", "Dana", "Emeka", "Fatima", "Goran", "Hana", "Ivan", "Julia", "Kenji", "Lena"]
_LAST = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Kowalski", "Reyes", "Brandt"]
_ORGS = ["Northwind Labs", "Helios Energy", "Blue Harbor Bank", "Orion Systems", "Cedar Health", "Atlas Freight",
         "Quantum Forge", "Riverbend University", "Summit Analytics", "Vega Aerospace"]
_PLACES = ["Lisbon", "Osaka", "Nairobi", "Toronto", "Krakow", "Valparaiso", "Reykjavik", "Chennai", "Tallinn", "Denver"]
_TOPICS = ["solid-state batteries", "fraud detection", "supply chain forecasting", "protein folding",
           "satellite telemetry", "wind turbine maintenance", "clinical trial design", "graph databases",
           "edge computing", "carbon accounting"]
_TEMPLATES = [
    "{person} of {org} presented new results on {topic} at a workshop in {place}.",
    "{org} opened a research office in {place} to study {topic}, led by {person}.",
    "In {place}, {person} signed an agreement between {org} and {org2} covering {topic}.",
    "{person} argued that {topic} will matter more to {org} than {topic2} over the next decade.",
    "A pilot project on {topic} run by {org2} in {place} was reviewed by {person} and {person2}.",
    "{org} hired {person} from {org2} after the team's work on {topic} in {place}.",
    "The annual report of {org} credits {person} with cutting the cost of {topic} by a third.",
    "{person2} and {person} co-authored a study of {topic} with data gathered in {place}.",
]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _sentence(rng: random.Random) -> str:
    return rng.choice(_TEMPLATES).format(
        person=_person(rng), person2=_person(rng), org=rng.choice(_ORGS), org2=rng.choice(_ORGS),
        place=rng.choice(_PLACES), topic=rng.choice(_TOPICS), topic2=rng.choice(_TOPICS),
    )


def _paragraphs(rng: random.Random, count: int) -> List[str]:
    return [" ".join(_sentence(rng) for _ in range(rng.randint(4, 7))) for _ in range(count)]


def _table_rows(rng: random.Random) -> List[List[str]]:
    header = ["Organization", "Site", "Budget (k$)", "Lead"]
    rows = [[rng.choice(_ORGS), rng.choice(_PLACES), str(rng.randint(50, 900)), _person(rng)] for _ in range(4)]
    return [header] + rows


def _write_markdown(path: Path, rng: random.Random, title: str, paragraphs: List[str], with_table: bool) -> None:
    lines = [f"# {title}", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    if with_table:
        rows = _table_rows(rng)
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "---|" * len(rows[0]))
        lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def _chart_png(path: Path, rng: random.Random) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 200), "white")
    draw = ImageDraw.Draw(image)
    for i in range(6):
        height = rng.randint(20, 170)
        draw.rectangle([20 + i * 48, 190 - height, 56 + i * 48, 190], fill=(40 + 30 * i, 90, 200 - 25 * i))
    image.save(path)


def _write_docx(path: Path, rng: random.Random, title: str, paragraphs: List[str]) -> None:
    import docx

    document = docx.Document()
    document.add_heading(title, level=1)
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    rows = _table_rows(rng)
    table = document.add_table(rows=len(rows), cols=len(rows[0]))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    chart = path.with_suffix(".png")
    _chart_png(chart, rng)
    document.add_picture(str(chart))
    document.add_paragraph(f"Figure 1. Quarterly spending of {rng.choice(_ORGS)} on {rng.choice(_TOPICS)}.")
    chart.unlink()
    document.save(path)


def synthetic_corpus(out_dir: str | Path, n_docs: int, seed: int = 0, paragraphs_per_doc: int = 3) -> List[Path]:
    """Write ``n_docs`` documents into ``out_dir`` (same seed, same bytes) and return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_docs):
        rng = random.Random(f"{seed}:{i}")
        title = f"Field note {i + 1:04d}: {rng.choice(_TOPICS)} at {rng.choice(_ORGS)}"
        paragraphs = _paragraphs(rng, paragraphs_per_doc)
        if i % 7 == 6:
            path = out_dir / f"note_{i + 1:04d}.docx"
            _write_docx(path, rng, title, paragraphs)
        elif i % 5 == 4:
            path = out_dir / f"note_{i + 1:04d}.md"
            _write_markdown(path, rng, title, paragraphs, with_table=True)
        else:
            path = out_dir / f"note_{i + 1:04d}.txt"
            path.write_text(title + "\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def corpus_files(folder: str | Path, suffixes=None) -> List[Path]:
    """The documents in a folder (recursively), sorted; SOURCES.md and hidden files left out."""
    from ragopt.backends.parser import SUPPORTED_SUFFIXES

    suffixes = set(suffixes or SUPPORTED_SUFFIXES)
    return sorted(
        p for p in Path(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes and p.name != "SOURCES.md" and not p.name.startswith(".")
    )
