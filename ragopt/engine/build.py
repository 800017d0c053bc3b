"""``build_rag``: a RAGAnything on ragopt's embedded defaults, optionally optimized.

The offline parser, the chosen backends (``ragopt.backends.make_backends``)
and the offline tokenizer; LightRAG's own settings stay at their defaults, so
the unoptimized instance is RAG-Anything as shipped and its entry points run
unchanged on top. ``optimized=True`` is the same instance passed through
``ragopt.optimize``. Either way LightRAG's storage files are written
atomically (``ragopt.compat.storage_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from ragopt.backends import Backends, make_backends
from ragopt.backends import parser as offline_parser
from ragopt.backends.raganything_parser import register as register_offline_parser
from ragopt.backends.tokenizer import offline_tokenizer
from ragopt.compat.lightrag import openai_binding_retry
from ragopt.compat.storage_files import protect_storage_files
from ragopt.config import RagoptConfig
from ragopt.engine.optimize import optimize

# RAG-Anything's default list leaves out HTML, which the offline parser reads.
SUPPORTED_EXTENSIONS = sorted(offline_parser.SUPPORTED_SUFFIXES)
RAG_WORKERS = 4  # RAG-Anything's entry points' max_workers when MAX_CONCURRENT_FILES is not set


def chosen_parser(name: Optional[str]) -> str:
    """The RAG-Anything parser name for ``RAGOPT_PARSER``: the offline parser by default, a
    ``module:Class`` registered under the class's lowercased name, else the name as given."""
    if name is None:
        return register_offline_parser()
    if ":" not in name:
        return name
    from importlib import import_module

    from raganything.parser import register_parser

    module, _, qualname = name.partition(":")
    cls = import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    register_parser(cls.__name__.lower(), cls)
    return cls.__name__.lower()


def build_rag(
    config: RagoptConfig,
    working_dir: str | Path,
    backends: Optional[Backends] = None,
    recorder: Any = None,
    lightrag_kwargs: Optional[Dict[str, Any]] = None,
    optimized: bool = False,
):
    """A ``RAGAnything`` on ``working_dir`` using ``backends`` (default: ``make_backends(config)``).

    ``recorder`` (a ``ragopt.measure.Recorder``) is attached before anything
    else wraps the model functions, so it sees every request the service
    serves (each retry attempt) and each call the embedding model makes (each
    micro-batch). The model functions retry as LightRAG's OpenAI binding does,
    unless ragopt's own retries are installed. ``lightrag_kwargs`` override
    LightRAG settings, also the tuned ones.
    """
    from raganything import RAGAnything, RAGAnythingConfig

    protect_storage_files()  # crash safety, not an optimization: the baseline gets it too
    backends = backends or make_backends(config)
    working_dir = Path(working_dir)
    rag = RAGAnything(
        config=RAGAnythingConfig(
            working_dir=str(working_dir),
            parser=chosen_parser(config.parser),
            parser_output_dir=str(working_dir / "parsed"),
            parse_method="auto",
            display_content_stats=False,
            max_concurrent_files=config.max_concurrent_files or RAG_WORKERS,
            supported_file_extensions=SUPPORTED_EXTENSIONS,
        ),
        llm_model_func=backends.llm_func,
        vision_model_func=backends.vision_func,
        embedding_func=backends.embedding_func,
        lightrag_kwargs={"tokenizer": offline_tokenizer(), "enable_llm_cache": config.enable_llm_cache,
                         **config.lightrag_storages()},
    )
    if recorder is not None:
        recorder.attach(rag)
    if not (optimized and config.llm_retries):
        # A RAG-Anything user reaches the endpoint through LightRAG's OpenAI binding, which retries its own way;
        # ragopt's retries, when on, replace it.
        rag.llm_model_func = openai_binding_retry(rag.llm_model_func)
        rag.vision_model_func = openai_binding_retry(rag.vision_model_func)
    if optimized:
        optimize(rag, config, slots=backends.slots)
    rag.lightrag_kwargs.update(lightrag_kwargs or {})
    return rag
