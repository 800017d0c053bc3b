import re
from pathlib import Path

import pytest

from ragopt.config import NOT_USED, CacheLimit, ConfigError, ConfigWarning, RagoptConfig

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def test_guide_variables_are_read():
    config = RagoptConfig.from_env({
        "MAX_CONCURRENT_FILES": "6",
        "ENABLE_PARSE_CACHE": "false",
        "CACHE_SIZE_LIMIT": "2GB",
        "CACHE_TTL_HOURS": "12",
        "MAX_MEMORY_MB": "4096",
        "GPU_MEMORY_FRACTION": "0.5",
        "FALLBACK_TO_CPU": "no",
        "BATCH_SIZE": "128",
    })
    assert config.max_concurrent_files == 6
    assert config.enable_parse_cache is False
    assert config.cache_size_limit == CacheLimit(bytes=2 * 1024**3)
    assert config.cache_ttl_hours == 12.0
    assert config.max_memory_mb == 4096
    assert config.gpu_memory_fraction == 0.5
    assert config.fallback_to_cpu is False
    assert config.batch_size == 128


@pytest.mark.parametrize("name,value", [
    ("MAX_CONCURRENT_FILES", "0"),
    ("MAX_CONCURRENT_PROCESSING", "many"),
    ("ENABLE_LLM_CACHE", "maybe"),
    ("GPU_MEMORY_FRACTION", "1.5"),
    ("CACHE_SIZE_LIMIT", "lots"),
    ("BATCH_TIMEOUT", "-1"),
])
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        RagoptConfig.from_env({name: value})


def test_round_trip_through_environment():
    config = RagoptConfig(max_memory_mb=512, sim_preset="fast", enable_llm_cache=False, cache_ttl_hours=None)
    assert RagoptConfig.from_env(config.to_env()) == config


def test_real_endpoint_by_configuration_and_key_never_recorded():
    config = RagoptConfig.from_env({"RAGOPT_LLM_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-secret"})
    assert not config.uses_simulator
    assert config.llm_api_key == "sk-secret"
    assert "sk-secret" not in str(config.to_dict())


# -- the guide's own file, verbatim ------------------------------------------------

GUIDE_FILE = Path(__file__).resolve().parent.parent / "examples" / "env.performance"


def test_the_guides_env_file_loads_verbatim_and_each_variable_acts_or_is_named_unused(tmp_path):
    with pytest.warns(ConfigWarning) as warned:
        config = RagoptConfig.from_env_file(GUIDE_FILE, environ={}, cache_storage=str(tmp_path / "cache"))
    assert len(warned) == 1
    named = set(str(warned[0].message).split(" (")[0].removeprefix("ragopt does not use ").split(", "))
    assert named == set(NOT_USED) == {"GC_THRESHOLD", "ENABLE_BATCH_CACHE", "PROFILING_ENABLED"}
    assert (config.enable_monitoring, config.metrics_port) == (True, 9090)  # the guide's own choice of port
    assert (config.max_concurrent_processing, config.max_concurrent_files, config.worker_pool_size) == (8, 10, 4)
    assert config.enable_parse_cache and config.enable_llm_cache
    assert config.cache_size_limit == CacheLimit(entries=5000) and config.cache_ttl_hours == 72
    assert (config.max_memory_mb, config.memory_cleanup_interval_s) == (8192, 300)
    assert (config.gpu_memory_fraction, config.fallback_to_cpu) == (0.8, True)
    assert (config.batch_size, config.batch_timeout_s) == (20, 600)  # documents per batch, seconds per batch


@pytest.mark.slow
def test_the_guides_env_file_ingests_the_samples_text_documents(tmp_path):
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag

    with pytest.warns(ConfigWarning):
        config = RagoptConfig.from_env_file(GUIDE_FILE, environ={"RAGOPT_SIM_PRESET": "fast"},
                                            cache_storage=str(tmp_path / "cache"))
    texts = sorted(p for p in SAMPLE.iterdir() if p.suffix in (".md", ".txt"))
    rag = build_rag(config, tmp_path / "kb", optimized=True)
    try:
        result = ingest(rag, texts, config=config, progress=False)
        lightrag = rag.lightrag
        assert (lightrag.llm_model_max_async, lightrag.max_parallel_insert) == (8, 10)
    finally:
        release_rag(rag)
    assert result.counts() == {"ok": len(texts), "failed": 0, "skipped": 0}, result.files
    assert result.batches == 1  # 3 documents, BATCH_SIZE=20
    assert result.cache_stats["entries"] == len(texts)  # CACHE_STORAGE holds the parses
    assert result.memory_gate == {"held_count": 0, "held_seconds": 0}  # MAX_MEMORY_MB's gate was in place


# -- each variable the README lists reaches the component it controls ------------


def _embedding_device(config):
    from ragopt.backends import embedding_for

    return embedding_for(config).func.device


def _optimized(config, tmp_path):
    from ragopt.engine.build import build_rag

    return build_rag(config, tmp_path / "kb", optimized=True)


def _ingest_settings(config):
    from ragopt.engine.orchestrator import IngestSettings

    return IngestSettings.resolve(config)


def _cache(config):
    from ragopt.cache.content_cache import ContentCache

    return ContentCache.from_config(config)


def _publishes(config):
    """Whether an entry point would publish live metrics (on a free port: the default one may be taken)."""
    import socket

    from ragopt.ui import monitoring

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    try:
        return monitoring.publisher_for(config.replace(metrics_port=port)) is not None
    finally:
        monitoring.stop_serving()


def _dashboard_port(config):
    from ragopt.ui.monitoring import dashboard_for

    return dashboard_for(config).port


def _simulator(config):
    from ragopt.backends import make_backends

    return make_backends(config).simulator.config


LISTED = {
    "MAX_CONCURRENT_PROCESSING": ("3", lambda c, t: (_simulator(c).slots, _optimized(c, t).lightrag_kwargs["llm_model_max_async"]), (3, 3)),
    "MAX_CONCURRENT_FILES": ("5", lambda c, t: (_ingest_settings(c).in_flight, _optimized(c, t).config.max_concurrent_files,
                                                  _optimized(c, t).lightrag_kwargs["max_parallel_insert"]), (5, 5, 5)),
    "WORKER_POOL_SIZE": ("3", lambda c, t: _parse_pool_size(c), 3),
    "BATCH_SIZE": ("7", lambda c, t: _ingest_settings(c).batch_size, 7),
    "BATCH_TIMEOUT": ("90", lambda c, t: _ingest_settings(c).batch_timeout_s, 90.0),
    "ENABLE_PARSE_CACHE": ("false", lambda c, t: _cache(c).location, None),
    "ENABLE_LLM_CACHE": ("false", lambda c, t: _optimized(c, t).lightrag_kwargs["enable_llm_cache"], False),
    "CACHE_STORAGE": ("{tmp}/cache", lambda c, t: _cache(c).location, "{tmp}/cache"),
    "CACHE_SIZE_LIMIT": ("5000", lambda c, t: (_cache(c).max_entries, _cache(c).size_limit_bytes), (5000, None)),
    "CACHE_TTL_HOURS": ("12", lambda c, t: _cache(c).ttl_hours, 12.0),
    "MAX_MEMORY_MB": ("100", lambda c, t: _ingest_settings(c).memory_budget_mb, 100),
    "MEMORY_CLEANUP_INTERVAL": ("30", lambda c, t: _ingest_settings(c).memory_cleanup_interval_s, 30.0),
    "GPU_MEMORY_FRACTION": ("0.5", lambda c, t: _embedding_device(c).gpu_memory_fraction, 0.5),
    "FALLBACK_TO_CPU": ("false", lambda c, t: _embedding_device(c).fallback_to_cpu, False),
    "RAGOPT_EMBEDDING_DEVICE": ("cpu", lambda c, t: _embedding_device(c).prefer, "cpu"),
    "RAGOPT_EMBED_THREADS": ("1", lambda c, t: _embedding_device(c).cpu_threads, 1),
    "RAGOPT_EMBEDDING_INPUT_MEMO": ("false", lambda c, t: __import__("ragopt.backends", fromlist=["x"]).embedding_for(c).func.memo,
                                    None),
    "RAGOPT_EMBEDDING_MODEL": ("/models/e5-small", lambda c, t: __import__("ragopt.backends", fromlist=["x"]).embedding_device(c).model, "/models/e5-small"),
    "RAGOPT_EMBED_BATCH_SIZE": ("16", lambda c, t: (_optimized(c, t).lightrag_kwargs["embedding_batch_num"],
                                                      _optimized(c, t).embedding_func.func.max_batch), (16, 16)),
    "RAGOPT_EMBED_BATCH_WAIT": ("0.5", lambda c, t: _optimized(c, t).embedding_func.func.max_wait_s, 0.5),
    "RAGOPT_SIM_PRESET": ("hosted", lambda c, t: (_simulator(c).ttft_s, _simulator(c).tpot_s), (0.8, 0.02)),
    "RAGOPT_SIM_RATE_429": ("0.25", lambda c, t: _simulator(c).rate_429, 0.25),
    "RAGOPT_SIM_RATE_TIMEOUT": ("0.25", lambda c, t: _simulator(c).rate_timeout, 0.25),
    "RAGOPT_SIM_RATE_5XX": ("0.25", lambda c, t: _simulator(c).rate_5xx, 0.25),
    "RAGOPT_SIM_SEED": ("42", lambda c, t: _simulator(c).seed, 42),
    "RAGOPT_PRICES": (str(Path(__file__).resolve().parents[1] / "examples" / "prices.toml"),
                      lambda c, t: getattr(_prices(c).models.get("gpt-4o-mini"), "input", None), 1.0),
    "RAGOPT_SIM_MAX_QUEUE": ("0", lambda c, t: _simulator(c).max_queue, 0),
    "RAGOPT_LLM_RPM": ("120", lambda c, t: _bucket_rate(_optimized(c, t), "requests"), 2.0),
    "RAGOPT_LLM_TPM": ("6000", lambda c, t: _bucket_rate(_optimized(c, t), "tokens"), 100.0),
    "RAGOPT_TUNED_CONCURRENCY": ("false", lambda c, t: "tuned_concurrency" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_GLEANING_PRIORITY": ("false", lambda c, t: "gleaning_priority" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_LLM_RETRIES": ("false", lambda c, t: "llm_retries" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_ADAPTIVE_CONCURRENCY": ("true", lambda c, t: "adaptive_concurrency" in _optimized(c, t).ragopt_installed, True),
    "RAGOPT_MICRO_BATCH_EMBEDDINGS": ("false", lambda c, t: "micro_batch_embeddings" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_COALESCE_FLUSHES": ("false", lambda c, t: "coalesce_flushes" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_WRITE_BEHIND_VECTORS": ("false", lambda c, t: "write_behind_vectors" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_VERSIONED_QUERY_CACHE": ("false", lambda c, t: "versioned_query_cache" in _optimized(c, t).ragopt_installed, False),
    "RAGOPT_QUERY_EMBEDDINGS_FIRST": ("false", lambda c, t: _optimized(c, t).embedding_func.func.queries_first, False),
    "RAGOPT_QUERY_EMBEDDING_MEMO": ("false", lambda c, t: _optimized(c, t).embedding_func.func.query_memo, False),
    "RAGOPT_QUERIES_SKIP_VECTOR_BACKLOG": ("false", lambda c, t: _vector_search_drains(c, t), True),
    "ENABLE_MONITORING": ("true", lambda c, t: _publishes(c), True),
    "METRICS_PORT": ("9191", lambda c, t: _dashboard_port(c), 9191),
    "RAGOPT_PARSER": ("standin_parser:StandInParser", lambda c, t: type(_optimized(c, t).doc_parser).__name__, "StandInParser"),
    "RAGOPT_KV_STORAGE": ("RedisKVStorage", lambda c, t: _optimized(c, t).lightrag_kwargs.get("kv_storage"), "RedisKVStorage"),
    "RAGOPT_DOC_STATUS_STORAGE": ("RedisDocStatusStorage", lambda c, t: _optimized(c, t).lightrag_kwargs.get("doc_status_storage"), "RedisDocStatusStorage"),
    "RAGOPT_VECTOR_STORAGE": ("FaissVectorDBStorage", lambda c, t: _optimized(c, t).lightrag_kwargs.get("vector_storage"), "FaissVectorDBStorage"),
    "RAGOPT_GRAPH_STORAGE": ("NetworkXStorage", lambda c, t: _optimized(c, t).lightrag_kwargs.get("graph_storage"), "NetworkXStorage"),
    "RAGOPT_WORKSPACE": ("team-a", lambda c, t: _optimized(c, t).lightrag_kwargs.get("workspace"), "team-a"),
    "REDIS_URL": ("redis://10.1.2.3:6390/2", lambda c, t: (_celery(c)["broker_url"], _celery(c)["result_backend"]),
                  ("redis://10.1.2.3:6390/2",) * 2),
    "CELERY_BROKER_URL": ("redis://10.1.2.3:6390/3", lambda c, t: _celery(c)["broker_url"], "redis://10.1.2.3:6390/3"),
    "CELERY_RESULT_BACKEND": ("redis://10.1.2.3:6390/4", lambda c, t: _celery(c)["result_backend"], "redis://10.1.2.3:6390/4"),
    "RAGOPT_VISIBILITY_TIMEOUT": ("7200", lambda c, t: _celery(c)["broker_transport_options"]["visibility_timeout"], 7200.0),
    "RAGOPT_WORKER_MAX_MEMORY_MB": ("512", lambda c, t: _celery(c)["worker_max_memory_per_child"], 512 * 1024),
    "RAGOPT_PARSE_SOFT_TIME_LIMIT": ("100", lambda c, t: _celery_app(c).tasks["ragopt.parse"].soft_time_limit, 100.0),
    "RAGOPT_PARSE_TIME_LIMIT": ("900", lambda c, t: _celery_app(c).tasks["ragopt.parse"].time_limit, 900.0),
    "RAGOPT_QUERY_TIME_LIMIT": ("30", lambda c, t: _task_bounds(c)["ragopt.query"], 30.0),
    "RAGOPT_TRANSFER_MAX_MB": ("8", lambda c, t: _transfer(c).max_mb, 8.0),
    "RAGOPT_TRANSFER_TTL_HOURS": ("2", lambda c, t: _transfer(c).ttl_s, 7200),
    "RAGOPT_KB_ROOT": ("{tmp}/kbs", lambda c, t: _kb_root(c), "{tmp}/kbs"),
    "RAGOPT_RAG_FACTORY": ("ragopt.engine.build:build_rag", lambda c, t: _rag_factory(c).__name__, "build_rag"),
    "RAGOPT_WRITER_LEASE": ("12", lambda c, t: _writer_lock(c).lease_ms, 12000),
}


def _celery(config):
    from ragopt.distributed.app import celery_settings

    return celery_settings(config, environ={})


def _celery_app(config):
    from ragopt.distributed.app import make_app

    return make_app(config, environ={})


def _task_bounds(config):
    from ragopt.distributed.app import task_bounds

    return task_bounds(config)


def _transfer(config):
    from ragopt.distributed.parse_task import transfer_for

    return transfer_for(_celery_app(config))


def _kb_root(config):
    from ragopt.distributed.factory import kb_root

    return kb_root(config)


def _rag_factory(config):
    from ragopt.distributed.factory import load_factory

    return load_factory(config.rag_factory)


def _writer_lock(config):
    from ragopt.cache.redis_store import redis_client
    from ragopt.distributed.lock import WriterLock

    return WriterLock(redis_client("redis://127.0.0.1:1/0"), "kb", "node|1|x", config.writer_lease_s)  # connects lazily


def _vector_search_drains(config, tmp_path):
    """Whether the initialized rag's entity vector search first drains the write-behind buffer."""
    import asyncio

    from ragopt.compat.raganything import ensure_initialized
    from ragopt.engine.release import arelease_rag

    async def look():
        rag = _optimized(config, tmp_path)
        await ensure_initialized(rag)
        try:
            return rag.lightrag.entities_vdb.query.__name__ == "drained_first"
        finally:
            await arelease_rag(rag)

    return asyncio.run(look())


def _bucket_rate(rag, name):
    bucket = rag.ragopt_stats.get("rate_limits", {}).get("buckets", {}).get(name)
    return None if bucket is None else bucket.rate


def _prices(config):
    from ragopt.measure.ledger import Prices

    return Prices.from_config(config)


def _parse_pool_size(config):
    from ragopt.engine.parse_pool import OFFLINE, pool_size

    return pool_size(OFFLINE, _ingest_settings(config).parse_workers)


def test_every_variable_the_readme_lists_is_tested_here():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`((?:RAGOPT_)?[A-Z][A-Z0-9_]{3,})`", readme.split("## Settings", 1)[1].split("\n## ", 1)[0]))
    assert listed - set(NOT_USED) - {"OPENAI_API_KEY", "CUDA_VISIBLE_DEVICES"} <= set(LISTED) | ENDPOINT_VARIABLES


# Tested against a running endpoint (tests/measure/test_recorder.py, tests/backends/test_embedding_endpoint.py).
ENDPOINT_VARIABLES = {"RAGOPT_LLM_BASE_URL", "RAGOPT_LLM_API_KEY", "RAGOPT_LLM_MODEL", "RAGOPT_VISION_MODEL", "RAGOPT_SAMPLE_INTERVAL",
                      "RAGOPT_EMBEDDING_BASE_URL", "RAGOPT_EMBEDDING_API_KEY", "RAGOPT_EMBEDDING_DIM"}


@pytest.mark.parametrize("name", sorted(LISTED))
def test_a_listed_variable_reaches_its_component(name, tmp_path):
    raw, seen, expected = LISTED[name]
    raw = raw.replace("{tmp}", str(tmp_path))
    expected = Path(expected.replace("{tmp}", str(tmp_path))).resolve() if isinstance(expected, str) and "{tmp}" in expected else expected
    assert seen(RagoptConfig.from_env({name: raw}), tmp_path) == expected
    assert seen(RagoptConfig.from_env({}), tmp_path) != expected, f"{name}: the default already gives {expected!r}"
