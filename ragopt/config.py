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
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


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


def _parse_port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("expected a TCP port 1-65535")
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


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Let 'none' (or an empty value) switch a bounded setting off."""

    def parse_or_none(raw: str) -> Any:
        return None if raw.strip().lower() in {"", "none", "off"} else parse(raw)

    return parse_or_none


def _env(name: str, parse: Callable[[str], Any], default: Any = None) -> Callable[[], Any]:
    return field(default=default, metadata={"env": name, "parse": parse})


@dataclass
class RagoptConfig:
    """All settings of a ragopt run. Field metadata names the environment variable."""

    # Parallel ingestion (ragopt.batch)
    max_concurrent_files: int = _env("MAX_CONCURRENT_FILES", _parse_positive_int, 4)
    """Documents in flight at once in ragopt.batch (and RAG-Anything's max_workers)."""
    max_concurrent_processing: int = _env("MAX_CONCURRENT_PROCESSING", _parse_positive_int, 8)
    """LLM requests in flight at once: set this to the serving engine's slot count."""
    batch_size: int = _env("BATCH_SIZE", _parse_positive_int, 64)
    """Largest embedding batch the micro-batcher sends to the model."""
    batch_timeout_s: float = _env("BATCH_TIMEOUT", _parse_positive_float, 0.02)
    """How long the micro-batcher waits for more texts before sending a batch."""

    # Orchestration optimizations of ragopt.batch (each one can be switched off for an ablation)
    tuned_concurrency: bool = _env("RAGOPT_TUNED_CONCURRENCY", _parse_bool, True)
    """LightRAG's knobs set from the LLM's slot count, and gleaning served before new extraction (ragopt.tuning)."""
    llm_retries: bool = _env("RAGOPT_LLM_RETRIES", _parse_bool, True)
    """Retry 429/timeout/5xx with exponential backoff and jitter, honouring Retry-After."""
    adaptive_concurrency: bool = _env("RAGOPT_ADAPTIVE_CONCURRENCY", _parse_bool, False)
    """Halve LLM requests in flight on a 429, grow back by one when calm."""
    micro_batch_embeddings: bool = _env("RAGOPT_MICRO_BATCH_EMBEDDINGS", _parse_bool, True)
    coalesce_flushes: bool = _env("RAGOPT_COALESCE_FLUSHES", _parse_bool, True)
    write_behind_vectors: bool = _env("RAGOPT_WRITE_BEHIND_VECTORS", _parse_bool, True)
    """Vector writes are embedded in batches in the background; a newer write of an id replaces a pending one."""

    # Caches
    enable_parse_cache: bool = _env("ENABLE_PARSE_CACHE", _parse_bool, True)
    enable_llm_cache: bool = _env("ENABLE_LLM_CACHE", _parse_bool, True)
    cache_storage: Optional[str] = _env("CACHE_STORAGE", _optional(str), None)
    """Parse-cache folder; None means the user's cache directory."""
    cache_size_limit_bytes: Optional[int] = _env("CACHE_SIZE_LIMIT", _parse_size, None)
    cache_ttl_hours: Optional[float] = _env("CACHE_TTL_HOURS", _optional(_parse_positive_float), None)

    # Memory and GPU
    max_memory_mb: Optional[int] = _env("MAX_MEMORY_MB", _optional(_parse_positive_int), None)
    memory_cleanup_interval_s: float = _env("MEMORY_CLEANUP_INTERVAL", _parse_positive_float, 60.0)
    gpu_memory_fraction: Optional[float] = _env("GPU_MEMORY_FRACTION", _optional(_parse_fraction), None)
    fallback_to_cpu: bool = _env("FALLBACK_TO_CPU", _parse_bool, True)

    # Monitoring
    enable_monitoring: bool = _env("ENABLE_MONITORING", _parse_bool, True)
    metrics_port: Optional[int] = _env("METRICS_PORT", _optional(_parse_port), None)
    sample_interval_s: float = _env("RAGOPT_SAMPLE_INTERVAL", _parse_positive_float, 0.25)

    # Model backends: the simulator unless a real endpoint is configured
    llm_base_url: Optional[str] = _env("RAGOPT_LLM_BASE_URL", _optional(str), None)
    """An OpenAI-compatible endpoint (OpenAI, vLLM, Ollama's /v1). None: the simulator."""
    llm_api_key: Optional[str] = _env("RAGOPT_LLM_API_KEY", _optional(str), None)
    llm_model: str = _env("RAGOPT_LLM_MODEL", str, "gpt-4o-mini")
    vision_model: Optional[str] = _env("RAGOPT_VISION_MODEL", _optional(str), None)
    sim_preset: str = _env("RAGOPT_SIM_PRESET", str, "default")
    sim_slots: Optional[int] = _env("RAGOPT_SIM_SLOTS", _optional(_parse_positive_int), None)
    sim_rate_429: float = _env("RAGOPT_SIM_RATE_429", _parse_rate, 0.0)
    sim_rate_timeout: float = _env("RAGOPT_SIM_RATE_TIMEOUT", _parse_rate, 0.0)
    sim_rate_5xx: float = _env("RAGOPT_SIM_RATE_5XX", _parse_rate, 0.0)
    sim_seed: int = _env("RAGOPT_SIM_SEED", int, 0)
    embedding_device: Optional[str] = _env("RAGOPT_EMBEDDING_DEVICE", _optional(str), None)

    @property
    def uses_simulator(self) -> bool:
        return self.llm_base_url is None

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
        if values.get("llm_api_key") is None and "OPENAI_API_KEY" in environ:
            values["llm_api_key"] = environ["OPENAI_API_KEY"]
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> "RagoptConfig":
        return dataclasses.replace(self, **changes)

    def to_env(self) -> Dict[str, str]:
        """The environment variables that ``from_env`` reads back into this config."""
        env = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            env[f.metadata["env"]] = "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def to_dict(self) -> Dict[str, Any]:
        """Plain values for a run record; the API key is never written out."""
        data = dataclasses.asdict(self)
        if data.get("llm_api_key"):
            data["llm_api_key"] = "***"
        return data
