"""ragopt: measure and speed up document ingestion in RAG-Anything, from a notebook.

The public API is imported lazily, so ``import ragopt`` stays fast and a
notebook pays for RAG-Anything, LightRAG and torch only when it uses them.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RagoptConfig": "ragopt.config",
    "ConfigError": "ragopt.config",
    "Backends": "ragopt.pipeline",
    "make_backends": "ragopt.pipeline",
    "build_rag": "ragopt.pipeline",
    "Recorder": "ragopt.metrics",
    "Run": "ragopt.metrics",
    "aprofile": "ragopt.experiments",
    "profile": "ragopt.experiments",
    "ingest": "ragopt.batch",
    "aingest": "ragopt.batch",
    "IngestResult": "ragopt.batch",
    "run_isolated": "ragopt.experiments",
    "compare_runs": "ragopt.experiments",
    "before_after": "ragopt.experiments",
    "ContentCache": "ragopt.cache",
    "BoundedStore": "ragopt.memory",
    "RSSMonitor": "ragopt.memory",
    "MemoryBudget": "ragopt.memory",
    "LeakCheck": "ragopt.memory",
    "soak": "ragopt.memory",
    "release_rag": "ragopt.memory",
    "arelease_rag": "ragopt.memory",
    "AdaptiveBatcher": "ragopt.gpu",
    "choose_device": "ragopt.gpu",
    "synthetic_corpus": "ragopt.workloads",
    "SAMPLE_CORPUS": "ragopt.workloads",
    "run_sync": "ragopt.aio",
    "plots": "ragopt.plots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragopt' has no attribute {name!r}")
    value = import_module(module)
    return value if name == module.rsplit(".", 1)[1] else getattr(value, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
