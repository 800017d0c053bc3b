"""ragopt: measure and speed up document ingestion in RAG-Anything, from a notebook.

The workflow is exported here; components are imported from their rooms
(``ragopt.backends``, ``ragopt.engine``, ``ragopt.cache``, ``ragopt.resources``,
``ragopt.measure``, ``ragopt.ui``). The exports load lazily, so ``import
ragopt`` stays fast and a notebook pays for RAG-Anything, LightRAG and torch
only when it uses them.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "RagoptConfig": "ragopt.config",
    "ConfigError": "ragopt.config",
    "Backends": "ragopt.backends",
    "make_backends": "ragopt.backends",
    "build_rag": "ragopt.engine.build",
    "optimize": "ragopt.engine.optimize",
    "optimizations": "ragopt.engine.registry",
    # The entry points: with ENABLE_MONITORING on they start the live page, then run the engine.
    "ingest": "ragopt.ui.monitoring",
    "aingest": "ragopt.ui.monitoring",
    "IngestResult": "ragopt.engine.results",
    "release_rag": "ragopt.engine.release",
    "arelease_rag": "ragopt.engine.release",
    "ContentCache": "ragopt.cache.content_cache",
    "MemoryBudget": "ragopt.resources.budget",
    "RSSMonitor": "ragopt.resources.rss",
    "BoundedStore": "ragopt.resources.bounded_store",
    "LeakCheck": "ragopt.resources.leaks",
    "soak": "ragopt.resources.leaks",
    "AdaptiveBatcher": "ragopt.resources.gpu",
    "choose_device": "ragopt.resources.gpu",
    "Recorder": "ragopt.measure.recorder",
    "Run": "ragopt.measure.run",
    "profile": "ragopt.measure.experiments",
    "aprofile": "ragopt.measure.experiments",
    "run_isolated": "ragopt.measure.experiments",
    "profile_rag": "ragopt.measure.experiments",
    "aprofile_rag": "ragopt.measure.experiments",
    "plan": "ragopt.measure.planner",
    "aplan": "ragopt.measure.planner",
    "Prices": "ragopt.measure.ledger",
    "compare_runs": "ragopt.measure.tables",
    "before_after": "ragopt.measure.tables",
    "synthetic_corpus": "ragopt.measure.workloads",
    "SAMPLE_CORPUS": "ragopt.measure.workloads",
    "run_sync": "ragopt.aio",
    "plots": "ragopt.ui.plots",
    "watch": "ragopt.ui.panel",
}

_MODULE_EXPORTS = {"plots"}  # exported as modules, not as a name inside one
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what static tools and IDEs see; at run time the names load on first use
    from ragopt.aio import run_sync
    from ragopt.backends import Backends, make_backends
    from ragopt.cache.content_cache import ContentCache
    from ragopt.config import ConfigError, RagoptConfig
    from ragopt.engine.build import build_rag
    from ragopt.ui.monitoring import aingest, ingest
    from ragopt.engine.optimize import optimize
    from ragopt.engine.registry import optimizations
    from ragopt.engine.release import arelease_rag, release_rag
    from ragopt.engine.results import IngestResult
    from ragopt.measure.experiments import aprofile, aprofile_rag, profile, profile_rag, run_isolated
    from ragopt.measure.ledger import Prices
    from ragopt.measure.planner import aplan, plan
    from ragopt.measure.recorder import Recorder
    from ragopt.measure.run import Run
    from ragopt.measure.tables import before_after, compare_runs
    from ragopt.measure.workloads import SAMPLE_CORPUS, synthetic_corpus
    from ragopt.resources.bounded_store import BoundedStore
    from ragopt.resources.budget import MemoryBudget
    from ragopt.resources.gpu import AdaptiveBatcher, choose_device
    from ragopt.resources.leaks import LeakCheck, soak
    from ragopt.resources.rss import RSSMonitor
    from ragopt.ui import plots
    from ragopt.ui.panel import watch


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragopt' has no attribute {name!r}")
    value = import_module(module)
    return value if name in _MODULE_EXPORTS else getattr(value, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
