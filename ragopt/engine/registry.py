"""The optimizations that install into a RAGAnything, each one named component registered once.

Like joblib's store backends, an optimization is registered by name with
``register_optimization``; the built-in ones register themselves when their
module is imported (``optimizations()`` imports them). ``optimize()``,
``build_rag``, the ablation variants and the benchmarks all read this table,
so a new optimization is one module and one ``register_optimization`` call.

Each optimization has its own switch (a ``RagoptConfig`` field), says when it
can be installed and what it counts:

- ``before_init``: it changes what LightRAG is built with (model functions,
  LightRAG settings), so it must be installed before RAG-Anything creates
  its LightRAG;
- ``after_init``: it patches LightRAG's live storages or queue, so it is
  installed right after LightRAG exists (at once if it already does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable, Dict, Optional, Tuple

BEFORE_INIT = "before_init"
AFTER_INIT = "after_init"


@dataclass
class Target:
    """What an optimization installs into: the rag, the config, K, and its own counters."""

    rag: Any
    config: Any  # ragopt.config.RagoptConfig
    slots: int
    stats: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Optimization:
    name: str
    field: str
    """The RagoptConfig switch that turns it on."""
    summary: str
    when: str
    install: Callable[[Target], None]
    counts: Tuple[str, ...] = ()
    """The counters it keeps in ``rag.ragopt_stats[name]``."""
    enabled: Optional[Callable[[Any], bool]] = None
    """Whether ``config`` switches it on; default: its ``field`` is true."""

    def on_in(self, config: Any) -> bool:
        return self.enabled(config) if self.enabled is not None else bool(getattr(config, self.field))

    def __post_init__(self) -> None:
        if self.when not in (BEFORE_INIT, AFTER_INIT):
            raise ValueError(f"{self.name}: when must be {BEFORE_INIT!r} or {AFTER_INIT!r}, got {self.when!r}")


_REGISTRY: Dict[str, Optimization] = {}
# Installed in this order: inner function layers before outer ones (pacing and
# the AIMD limit inside the retries, so each attempt is paced and takes a slot).
_BUILTIN_MODULES = (
    "ragopt.engine.tuning",
    "ragopt.engine.gleaning",
    "ragopt.engine.pacing",
    "ragopt.engine.retry",
    "ragopt.engine.microbatch",
    "ragopt.engine.flushes",
    "ragopt.engine.query_cache",  # before write-behind: a vector write counts when it reaches the storage
    "ragopt.engine.writebehind",
)


def register_optimization(optimization: Optimization) -> Optimization:
    """Add ``optimization`` to the registry (a second one with the same name is an error)."""
    existing = _REGISTRY.get(optimization.name)
    if existing is not None and existing != optimization:
        raise ValueError(f"an optimization named {optimization.name!r} is already registered")
    _REGISTRY[optimization.name] = optimization
    return optimization


def optimizations() -> Dict[str, Optimization]:
    """Every registered optimization by name, in installation order."""
    for module in _BUILTIN_MODULES:
        import_module(module)
    return dict(_REGISTRY)
