"""Small corpora the tests share: good documents, and files no parser can read."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
TEST_DATA = ROOT / "tests" / "data"  # a small licensed subset of the dev corpus (SOURCES.md there)
# The larger dev corpus lies beside the repository (../shared) in CI, not in a clone.
DEV_CORPUS = Path(os.environ.get("RAGOPT_DEV_CORPUS") or ROOT.parent / "shared" / "corpus" / "dev")
needs_dev_corpus = pytest.mark.skipif(
    not DEV_CORPUS.is_dir(), reason=f"no dev corpus at {DEV_CORPUS} (set RAGOPT_DEV_CORPUS; a clone has none)"
)
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
