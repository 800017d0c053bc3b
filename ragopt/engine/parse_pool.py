"""The parse stage: the rag's parser run in a pool of spawned processes, through the parse cache.

Parsing is CPU (or GPU) work and pypdfium2 is not thread-safe, so it runs in
processes, never threads. A worker gets a ``ParserSpec`` (picklable): the
rag's parser by RAG-Anything name, the import path of a registered parser's
class (a spawned worker does not see a class registered in the caller's
memory, so it registers it again from there), the parser's version and the
options RAG-Anything itself would pass. ragopt's offline parser is called
directly, so a worker for it starts in a fraction of a second without
importing RAG-Anything, LightRAG or pandas.

Pool size: one process per usable core for a CPU parser; for a GPU parser
(MinerU, Docling, PaddleOCR, or a registered class with ``uses_gpu = True``)
one process per visible GPU, each pinned to its own device through
``CUDA_VISIBLE_DEVICES``, so two GPUs parse two documents at once and no card
is oversubscribed. ``workers`` overrides either.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ragopt.backends import parser as offline_parser
from ragopt.cache.content_cache import ContentCache
from ragopt.resources.heap import trim_free_heap
from ragopt.resources.lifeline import lifeline

GPU_PARSERS = frozenset({"mineru", "docling", "paddleocr"})
RECYCLE_AFTER_FILES = 1000
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tiff", ".tif", ".gif", ".webp"}
_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
_OFFICE_SUFFIXES = {".doc", ".docx", ".ppt", ".pptx", ".xls", ".xlsx"}


class ParserNotImportable(RuntimeError):
    """A registered parser class that a spawned worker process cannot import."""


@dataclass(frozen=True)
class ParserSpec:
    """Which parser a worker runs, with which options; everything a cache key needs."""

    name: str
    version: str
    class_path: Optional[str] = None
    """``module:QualName`` of a registered parser class; None for ragopt's offline parser and the built-ins."""
    uses_gpu: bool = False
    options: Tuple[Tuple[str, Any], ...] = field(default=())
    """RAG-Anything's parse options (parse_method, lang, device, backend, start_page, ...), sorted."""

    @property
    def offline(self) -> bool:
        return self.name == offline_parser.PARSER_NAME and self.class_path is None

    def kwargs(self) -> Dict[str, Any]:
        return dict(self.options)


OFFLINE = ParserSpec(offline_parser.PARSER_NAME, offline_parser.PARSER_VERSION)


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def _version_of(cls: type) -> str:
    """A parser's version for the cache key: its ``__version__``, else its top-level package's."""
    from importlib import metadata

    explicit = getattr(cls, "__version__", None) or getattr(cls, "VERSION", None)
    if explicit:
        return str(explicit)
    top = cls.__module__.split(".")[0]
    try:
        return metadata.version(top)
    except metadata.PackageNotFoundError:
        return "unversioned"


def parser_spec(rag: Any, **options: Any) -> ParserSpec:
    """The ``ParserSpec`` of ``rag``'s parser (``rag.config.parser``) with RAG-Anything's options.

    ``parse_method`` defaults to the rag's config, as in RAG-Anything's own
    ``process_document_complete``. A parser class defined in ``__main__`` or a
    notebook cell cannot be imported by a worker: that is a clear error here,
    not a failure per file later.
    """
    from ragopt.backends.raganything_parser import OfflineParser

    name = (rag.config.parser or "mineru").strip().lower()
    parser = rag.doc_parser
    options = {"parse_method": rag.config.parse_method, **options}
    options = {k: v for k, v in options.items() if v is not None}
    items = tuple(sorted(options.items()))
    if isinstance(parser, OfflineParser):
        return ParserSpec(offline_parser.PARSER_NAME, offline_parser.PARSER_VERSION, options=items)
    cls = type(parser)
    if name in GPU_PARSERS:
        return ParserSpec(name, _version_of(cls), uses_gpu=True, options=items)
    path = _class_path(cls)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise ParserNotImportable(
            f"parser {name!r} ({cls.__qualname__}) is defined in {cls.__module__!r}, which the parse "
            "worker processes cannot import: move the class into a module (a .py file on the "
            "Python path) and register it from there"
        )
    return ParserSpec(name, _version_of(cls), class_path=path, uses_gpu=bool(getattr(cls, "uses_gpu", False)), options=items)


# ----------------------------------------------------------------- in the worker

_parsers: Dict[Tuple[str, Optional[str]], Any] = {}  # (name, class path) -> instance


def _parser_instance(spec: ParserSpec) -> Any:
    """The worker's instance of the spec's parser, registering a custom class as the caller did."""
    key = (spec.name, spec.class_path)
    parser = _parsers.get(key)
    if parser is None:
        from raganything.parser import get_parser, register_parser

        if spec.class_path is not None:
            try:
                cls = _import_class(spec.class_path)
            except (ImportError, AttributeError) as error:
                raise ParserNotImportable(f"the parse worker cannot import parser {spec.class_path}: {error}") from None
            register_parser(spec.name, cls)
        parser = _parsers[key] = get_parser(spec.name)
    return parser


def _run_parser(path: str, output_dir: str, spec: ParserSpec) -> List[dict]:
    """Dispatch by suffix the way ``RAGAnything.parse_document`` does."""
    if spec.offline:
        return offline_parser.parse_file(path, output_dir, **spec.kwargs())
    parser = _parser_instance(spec)
    options = spec.kwargs()
    method = options.pop("parse_method", "auto")
    suffix = Path(path).suffix.lower()
    if suffix == ".pdf":
        return parser.parse_pdf(pdf_path=Path(path), output_dir=output_dir, method=method, **options)
    if suffix in _IMAGE_SUFFIXES:
        return parser.parse_image(image_path=Path(path), output_dir=output_dir, **options)
    if suffix in _HTML_SUFFIXES:
        if not hasattr(parser, "parse_html"):
            raise ValueError(f"{path}: parser {spec.name!r} cannot read HTML (it has no parse_html)")
        return parser.parse_html(html_path=Path(path), output_dir=output_dir, **options)
    if suffix in _OFFICE_SUFFIXES:
        return parser.parse_office_doc(doc_path=Path(path), output_dir=output_dir, **options)
    return parser.parse_document(file_path=Path(path), method=method, output_dir=output_dir, **options)


def _collect_garbage() -> None:
    """Free this file's reference cycles now, then malloc's freed memory.

    python-docx leaves each document in reference cycles that hold its lxml
    tree: C memory the collector does not weigh, so the cycles wait for a
    rare full collection and a worker grew by ~0.2 MB per file. After the
    first file, what is alive (modules, the parser's imports) is frozen out
    of the collector, so each later collection scans only the new objects
    (under 5 ms instead of ~30).
    """
    gc.collect()
    if not gc.get_freeze_count():
        gc.freeze()
    trim_free_heap()


def parse_through_cache(path: str, file_digest: Optional[str], output_dir: str, cache: ContentCache,
                        spec: ParserSpec) -> Tuple[List[dict], bool, float, Dict[str, Any]]:
    """(content_list, cache hit, seconds, this call's cache stats) for one file, in a worker."""
    start = time.perf_counter()
    misses_before = cache.stats()["misses"]
    content = cache.get_or_parse(
        path, lambda p, **_: _run_parser(p, output_dir, spec), spec.name, spec.version, file_digest, **spec.kwargs()
    )
    hit = cache.stats()["misses"] == misses_before
    _collect_garbage()
    return content, hit, time.perf_counter() - start, cache.stats()


# ----------------------------------------------------------------- in the caller

def _pin_gpu(devices: List[str], counter: Any) -> None:
    """Worker initializer: claim the next device of ``devices`` before anything imports CUDA."""
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[index % len(devices)]


def visible_gpus() -> List[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES names them (none without CUDA)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        return []
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def pool_size(spec: ParserSpec, workers: Optional[int] = None) -> int:
    """Processes for ``spec``: ``workers`` if given, else one per visible GPU (GPU parser) or usable core."""
    if workers:
        return workers
    if spec.uses_gpu and visible_gpus():
        return len(visible_gpus())
    return max(1, len(os.sched_getaffinity(0)))


_pools: Dict[Tuple[int, bool], Tuple[ProcessPoolExecutor, int]] = {}  # (workers, pinned) -> (pool, files)


def parse_pool(spec: ParserSpec, workers: Optional[int] = None) -> ProcessPoolExecutor:
    """The process's parse pool for ``spec``, for one more file; kept across ingest calls.

    Spawned, not forked: this process has threads (torch, samplers), and a fork
    copies their locks in whatever state they are. Starting workers costs
    about a second, so the pool outlives one call; a pool broken by a crashed
    worker is replaced. Workers free each file's reference cycles and hand
    freed memory back after it: in a 1,000-document soak the pool's RSS then
    stayed flat (0.02 MB per 100 documents). As a bound on what that cannot
    return (a leak in a parser library), the pool is also replaced after
    ``RECYCLE_AFTER_FILES`` files per worker: the old pool finishes the files
    it has and then exits (``shutdown(wait=False)``); not
    ``max_tasks_per_child``, which on Python 3.11 can leave queued tasks with
    no worker, and ingest hangs. ``release_parse_pools`` ends them when an
    ingest call has parsed its last file, so idle workers hold no memory
    through the rest of the run.
    """
    size = pool_size(spec, workers)
    gpus = visible_gpus() if spec.uses_gpu else []
    key = (size, bool(gpus))
    pool, files = _pools.get(key, (None, 0))
    if pool is None or getattr(pool, "_broken", False) or files >= RECYCLE_AFTER_FILES * size:
        if pool is not None:
            pool.shutdown(wait=False)
        context = multiprocessing.get_context("spawn")
        pinning = (_pin_gpu, (gpus, context.Value("i", 0))) if gpus else (None, ())
        pool, files = ProcessPoolExecutor(max_workers=size, mp_context=context, **lifeline(*pinning)), 0
    _pools[key] = (pool, files + 1)
    return pool


def release_parse_pools() -> None:
    """Let every parse pool finish what it has and exit (the next parse starts a fresh one)."""
    while _pools:
        pool, _ = _pools.popitem()[1]
        pool.shutdown(wait=False)


# A pool still referenced when the interpreter tears its modules down is collected after
# concurrent.futures' own globals are gone ("Exception ignored in ... weakref_cb").
atexit.register(release_parse_pools)


class LocalParseExecutor:
    """The parse stage on this machine's process pool: the default executor of ``ingest``.

    An executor has ``async parse(path, digest, output_dir, cache, spec)`` ->
    (content_list, cache hit, seconds, cache stats) and ``idle()``, called
    once an ingest call has parsed all its files (``ragopt.distributed``
    sends the parse stage to Celery workers the same way).
    """

    def __init__(self, workers: Optional[int] = None):
        self.workers = workers

    async def parse(self, path: str, digest: Optional[str], output_dir: str, cache: ContentCache,
                    spec: ParserSpec) -> Tuple[List[dict], bool, float, Dict[str, Any]]:
        """In the process pool; a crashed worker gets the file one more try in a fresh pool."""
        import asyncio
        from concurrent.futures.process import BrokenProcessPool

        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            try:
                pool = parse_pool(spec, self.workers)
                return await loop.run_in_executor(pool, parse_through_cache, path, digest, output_dir, cache, spec)
            except BrokenProcessPool:
                if attempt == 2:
                    raise RuntimeError(f"{path}: the parser process crashed twice on this file") from None
        raise AssertionError("unreachable")

    def idle(self) -> None:
        release_parse_pools()
