"""The RAGAnything of a knowledge base, built in a worker by a factory named by import path.

Functions do not travel as JSON, so a worker builds its knowledge bases with
RAGOPT_RAG_FACTORY (``module:function``, as Celery names its app), called as
``factory(kb, config)``; if it has a ``warm_up(config)`` attribute, a worker calls
that as it starts (the default loads the embedding model). The default is ``build_rag`` on the embedded
defaults: all knowledge bases share the working dir RAGOPT_KB_ROOT, each its
own LightRAG workspace (a subfolder of that name, and its own share of
LightRAG's process-wide state).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Callable

import platformdirs

from ragopt.config import ConfigError, RagoptConfig

_KB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_kb_name(kb: str) -> str:
    """A knowledge base name is a LightRAG workspace and part of Redis keys: letters, digits, _ and -."""
    if not isinstance(kb, str) or not _KB_NAME.fullmatch(kb):
        raise ValueError(f"knowledge base name {kb!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    return kb


def kb_root(config: RagoptConfig) -> Path:
    return Path(config.kb_root or Path(platformdirs.user_data_dir("ragopt")) / "kb").expanduser().resolve()


def kb_folder(config: RagoptConfig, kb: str) -> Path:
    """The folder of knowledge base ``kb`` under the default factory: its LightRAG workspace."""
    return kb_root(config) / check_kb_name(kb)


def default_factory(kb: str, config: RagoptConfig) -> Any:
    from ragopt.engine.build import build_rag

    return build_rag(config, kb_root(config), optimized=True, lightrag_kwargs={"workspace": check_kb_name(kb)})


def _warm_up(config: RagoptConfig) -> None:
    from ragopt.backends import embedding_device
    from ragopt.backends.embedding import warm_up

    warm_up(embedding_device(config))


default_factory.warm_up = _warm_up  # a worker calls a factory's warm_up(config) as it starts, if it has one


def load_factory(path: str) -> Callable[[str, RagoptConfig], Any]:
    """The function ``module:function`` names (RAGOPT_RAG_FACTORY)."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"RAGOPT_RAG_FACTORY={path!r} cannot be imported: {error}") from None
