import pytest

from ragopt.config import CacheLimit, ConfigError, RagoptConfig


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
