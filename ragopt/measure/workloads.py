"""Workloads: the committed sample corpus and generated corpora of any size.

``synthetic_corpus`` writes N small documents whose sentences mention entities
drawn from shared pools, so entities recur across documents and LightRAG's
merge stage does real work, as it does on a real collection. Every fifth
document is a Markdown file with a pipe table and every seventh a DOCX with a
table and an image, so the multimodal stage is part of every figure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import List

from ragopt.assets import sample_corpus

SAMPLE_CORPUS = sample_corpus()

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


# --------------------------------------------------------------------------- duplicate workloads

DUPLICATE_KINDS = ("renamed", "copied", "touched")
_COPY_FOLDERS = ("archive", "shared/team-a", "inbox/2024-06")
_FIXED_MTIME_NS = 1_700_000_000 * 10**9  # every generated file starts with this mtime


def duplicate_workload(source_paths, out_dir: str | Path, duplicate_fraction: float, seed: int = 0) -> dict:
    """A corpus in ``out_dir`` where ``duplicate_fraction`` of the parse requests repeat known content.

    Each distinct source file is copied once into ``out_dir`` (an *original*);
    sources with the same bytes count once. Duplicates come in three kinds, in
    turn: *renamed* (a copy next to the original under another name),
    *copied* (a copy under its own name in a sub-folder such as ``archive/``)
    and *touched* (the original itself, requested again after
    ``touch_originals`` changed its mtime; at most one per original). Every
    generated file gets the same fixed mtime, so a run is repeatable.

    The workload is two passes of parse requests: ``passes[0]`` is every file
    on disk (``files``, sorted), then ``touch_originals(manifest)``, then
    ``passes[1]`` requests the touched originals again. With U distinct
    contents and D duplicate requests, D = round(f * U / (1 - f)), and
    ``hit_rate_max`` = D / (U + D): the share of requests a cache keyed on
    content alone can answer. Same sources, fraction and seed: same corpus.

    Returns a JSON-ready manifest (paths as strings): ``files``,
    ``originals``, ``duplicates`` (rows of path, original, kind),
    ``duplicate_of`` (copy -> original, files on disk only), ``touched``,
    ``passes``, ``requests``, ``duplicate_requests``, ``unique_contents``,
    ``counts`` per kind, ``sha256`` per file, ``hit_rate_max``.
    """
    import hashlib
    import os
    import shutil

    if not 0 <= duplicate_fraction < 1:
        raise ValueError(f"duplicate_fraction must be in [0, 1), got {duplicate_fraction!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; a duplicate workload needs a folder of its own")
    out_dir.mkdir(parents=True, exist_ok=True)

    def digest(path: Path) -> str:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()

    def free_name(folder: Path, stem: str, suffix: str, keep_name: bool) -> Path:
        """``stem`` + suffix if free (and wanted), else the first free ``stem_vN`` + suffix."""
        candidate, n = folder / f"{stem}{suffix}", 2
        while candidate.exists() or not keep_name:
            candidate, n, keep_name = folder / f"{stem}_v{n}{suffix}", n + 1, True
        return candidate

    def place(source: Path, target: Path) -> str:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)  # bytes only: no mode, no timestamps
        os.utime(target, ns=(_FIXED_MTIME_NS, _FIXED_MTIME_NS))
        return str(target)

    # Originals: one file per distinct content, in the order given.
    sha256: dict = {}
    originals: List[str] = []
    seen: dict = {}
    for source in map(Path, source_paths):
        content = digest(source)
        if content in seen:
            continue
        target = free_name(out_dir, source.stem, source.suffix, keep_name=True)
        seen[content] = place(source, target)
        originals.append(seen[content])
        sha256[seen[content]] = content
    if not originals:
        raise ValueError("duplicate_workload needs at least one source file")

    unique = len(originals)
    n_duplicates = round(duplicate_fraction * unique / (1 - duplicate_fraction))
    rng = random.Random(f"duplicates:{seed}")
    touch_order = rng.sample(originals, unique)
    duplicates: List[dict] = []
    duplicate_of: dict = {}
    touched: List[str] = []
    for k in range(n_duplicates):
        kind = DUPLICATE_KINDS[k % 3]
        if kind == "touched" and len(touched) == unique:  # each original is touched once at most
            kind = DUPLICATE_KINDS[k % 2]
        if kind == "touched":
            original = touch_order[len(touched)]
            touched.append(original)
            duplicates.append({"path": original, "original": original, "kind": kind})
            continue
        original = rng.choice(originals)
        stem, suffix = Path(original).stem, Path(original).suffix
        if kind == "renamed":
            target = free_name(out_dir, stem, suffix, keep_name=False)
        else:
            target = free_name(out_dir / rng.choice(_COPY_FOLDERS), stem, suffix, keep_name=True)
        path = place(Path(original), target)
        sha256[path] = sha256[original]
        duplicate_of[path] = original
        duplicates.append({"path": path, "original": original, "kind": kind})

    files = sorted(originals + list(duplicate_of), key=lambda p: Path(p).relative_to(out_dir).as_posix())
    requests = len(files) + len(touched)
    return {
        "out_dir": str(out_dir),
        "seed": seed,
        "duplicate_fraction": duplicate_fraction,
        "files": files,
        "originals": originals,
        "duplicates": duplicates,
        "duplicate_of": duplicate_of,
        "touched": touched,
        "passes": [files, list(touched)],
        "requests": requests,
        "duplicate_requests": requests - unique,
        "unique_contents": unique,
        "counts": {"originals": unique, **{kind: sum(d["kind"] == kind for d in duplicates) for kind in DUPLICATE_KINDS}},
        "sha256": sha256,
        "hit_rate_max": (requests - unique) / requests,
    }


def touch_originals(manifest: dict) -> List[str]:
    """Give the workload's touched originals a new mtime (bytes unchanged), as between its two passes.

    The new mtime is now, or one second past the old one if that is later,
    so it changes even on a file system with coarse timestamps. Returns the
    touched paths.
    """
    import os
    import time

    for path in manifest["touched"]:
        old = os.stat(path).st_mtime_ns
        new = max(time.time_ns(), old + 10**9)
        os.utime(path, ns=(new, new))
    return list(manifest["touched"])


@dataclass(frozen=True)
class Corpus:
    folder: Path
    documents: List[Path]

    def __str__(self) -> str:
        return str(self.folder)


def corpus_for(folder: str | Path | None = None, synthetic_docs: int = 0, seed: int = 0) -> Corpus:
    """The corpus a notebook's parameters name: ``synthetic_docs`` generated documents (in a fresh
    temporary folder), else ``folder``, else the committed sample."""
    import tempfile

    if synthetic_docs:
        folder = Path(tempfile.mkdtemp(prefix="ragopt-synthetic-"))
        synthetic_corpus(folder, synthetic_docs, seed=seed)
    folder = Path(folder or SAMPLE_CORPUS)
    return Corpus(folder, corpus_files(folder))
