"""Small corpora the tests share: good documents, and files no parser can read."""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
GOOD_PDF = "fbi_nics_firearm_checks_2015-11.pdf"  # one page, text layer, no images
ALPHA = (
    "Ada Okafor of Northwind Labs presented new results on solid-state batteries at a workshop in Lisbon.\n"
    "Helios Energy opened a research office in Osaka to study fraud detection, led by Brian Lindqvist.\n"
)
BETA = "# Beta\n\nChen Moreau signed an agreement between Orion Systems and Cedar Health covering graph databases.\n"
GOOD_FILES = ("alpha.txt", "beta.md", GOOD_PDF)
# file name -> words its error message must contain (besides the file's path)
BAD_FILES = {"empty.txt": "empty", "corrupt.pdf": "not a valid PDF", "garbage.txt": "binary"}


def write_good_files(folder: Path) -> None:
    (folder / "alpha.txt").write_text(ALPHA, encoding="utf-8")
    (folder / "beta.md").write_text(BETA, encoding="utf-8")
    shutil.copyfile(SAMPLE / GOOD_PDF, folder / GOOD_PDF)


def write_bad_files(folder: Path) -> None:
    (folder / "empty.txt").write_bytes(b"")
    noise = bytes((i * 7919 + 13) % 256 for i in range(4096))  # fixed "random" bytes, NULs included
    (folder / "corrupt.pdf").write_bytes(noise)
    (folder / "garbage.txt").write_bytes(noise[::-1])
