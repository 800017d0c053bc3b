"""Nothing outside ragopt/compat/ uses a private name of RAG-Anything or LightRAG."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from typing import Iterator, Set, Tuple

import pytest

RAGOPT = Path(__file__).resolve().parents[2] / "ragopt"
LIBRARIES = ("raganything", "lightrag")


def _private_names(package: str) -> Set[str]:
    """Every single-underscore name a library defines: methods, attributes it assigns, module globals."""
    root = Path(importlib.util.find_spec(package).origin).parent
    names: Set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8", errors="replace"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _touches(path: Path, private: Set[str]) -> Iterator[Tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in private:
            receiver = node.value
            if not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")):
                yield node.lineno, f".{node.attr}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LIBRARIES:
            for alias in node.names:
                if alias.name.startswith("_") or "shared_storage" in (node.module or "") or alias.name == "shared_storage":
                    yield node.lineno, f"from {node.module} import {alias.name}"


@pytest.fixture(scope="module")
def private() -> Set[str]:
    return set().union(*(_private_names(package) for package in LIBRARIES))


def test_the_scan_finds_the_touches_compat_makes(private):
    """The scan itself works: compat's own modules are full of them."""
    found = [touch for path in (RAGOPT / "compat").glob("*.py") for touch in _touches(path, private)]
    assert {"._ensure_lightrag_initialized", "._insert_done", "._shared_dicts"} <= {name for _, name in found}


def test_no_private_name_outside_compat(private):
    offenders = [
        f"{path.relative_to(RAGOPT.parent)}:{line}: {name}"
        for path in sorted(RAGOPT.rglob("*.py")) if "compat" not in path.relative_to(RAGOPT).parts
        for line, name in _touches(path, private)
    ]
    assert not offenders, "move these behind a pinned function of ragopt/compat/:\n" + "\n".join(offenders)
