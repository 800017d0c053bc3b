"""A parser for the tests: ragopt's offline parser, except that a file named ``gated*`` waits for a gate file.

The gate is the path in GATED_PARSER_GATE; a test opens it by creating it, so
a parse is held in flight for exactly as long as the test needs (a kill, a
Redis restart, a cancel), and never by a guessed sleep. Workers import this
module from PYTHONPATH, by the class path in the rag's ParserSpec; ``SPEC`` is
what RAGOPT_PARSER names it by.
"""

import os
import time
from pathlib import Path

from raganything.parser import Parser

from ragopt.backends import parser as offline

SPEC = "gated_parser:GatedParser"  # RAGOPT_PARSER of the tests' knowledge bases


class GatedParser(Parser):
    def check_installation(self) -> bool:
        return True

    def _parse(self, path, output_dir=None):
        if Path(path).name.startswith("gated"):
            gate = Path(os.environ["GATED_PARSER_GATE"])
            while not gate.exists():
                time.sleep(0.05)
        return offline.parse_file(path, output_dir)

    def parse_document(self, file_path, method="auto", output_dir=None, lang=None, **_):
        return self._parse(file_path, output_dir)

    def parse_pdf(self, pdf_path, output_dir=None, method="auto", lang=None, **_):
        return self._parse(pdf_path, output_dir)

    def parse_office_doc(self, doc_path, output_dir=None, lang=None, **_):
        return self._parse(doc_path, output_dir)

    def parse_html(self, html_path, output_dir=None, lang=None, **_):
        return self._parse(html_path, output_dir)

    def parse_text_file(self, text_path, output_dir=None, lang=None, **_):
        return self._parse(text_path, output_dir)

