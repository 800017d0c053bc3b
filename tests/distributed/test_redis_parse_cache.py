"""``ContentCache("redis://...")``: the parse cache every machine shares, JSON and image bytes, never a pickle."""

import json
import pickle
import warnings

import pytest
from joblib._store_backends import CacheWarning

from ragopt.backends import parser as offline
from ragopt.cache.content_cache import ContentCache, content_key
from ragopt.cache.redis_store import PREFIX, RedisContentCache, redis_client
from ragopt.config import RagoptConfig
from ragopt.measure.workloads import synthetic_corpus


@pytest.fixture
def docx(tmp_path):
    """A synthetic DOCX with a table and an image (the seventh document of a synthetic corpus)."""
    return synthetic_corpus(tmp_path / "corpus", 7, paragraphs_per_doc=1)[-1]


def make_cache(redis_server, tmp_path, **bounds):
    return ContentCache(redis_server.url, image_dir=tmp_path / "images", **bounds)


def parse_counting(calls, output_dir):
    def parse(path, **_):
        calls.append(path)
        return offline.parse_file(path, output_dir)

    return parse


def test_entries_round_trip_as_json_and_image_bytes_for_every_copy(redis_server, tmp_path, docx):
    cache = make_cache(redis_server, tmp_path)
    assert isinstance(cache, RedisContentCache)
    calls = []
    first = cache.get_or_parse(docx, parse_counting(calls, tmp_path / "out"), "ragopt", "1")
    copy = pickle.loads(pickle.dumps(cache))  # what a worker process receives: settings, zero counters
    second = copy.get_or_parse(docx, parse_counting(calls, tmp_path / "out"), "ragopt", "1")
    assert len(calls) == 1 and (cache.misses, copy.hits, copy.misses) == (1, 1, 0)
    images = [(a["img_path"], b["img_path"]) for a, b in zip(first, second) if a.get("img_path")]
    assert images, "the DOCX has an image"
    for parsed, cached in images:
        assert cached != parsed and open(cached, "rb").read() == open(parsed, "rb").read()
    strip = lambda blocks: [{k: v for k, v in b.items() if k != "img_path"} for b in blocks]
    assert strip(second) == strip(first)
    # What is in Redis: JSON text and raw bytes; no local path of the parsing machine.
    stored = redis_client(redis_server.url).hgetall(f"{PREFIX}:entry:{content_key(docx, 'ragopt', '1')}")
    item = json.loads(stored[b"item"])
    assert str(tmp_path) not in stored[b"item"].decode()
    assert [k for k in stored if k.startswith(b"blob:")] and item["images"][0]["name"].startswith("images/")
    assert copy.stats()["entries"] == 1 and copy.stats()["bytes_stored"] == sum(len(v) for v in stored.values())


def test_fetch_writes_images_where_a_local_parse_would_have(redis_server, tmp_path, docx):
    cache = make_cache(redis_server, tmp_path)
    parsed = cache.get_or_parse(docx, parse_counting([], tmp_path / "worker-out"), "ragopt", "1")
    fetched = cache.fetch(content_key(docx, "ragopt", "1"), tmp_path / "caller-out")
    local = offline.parse_file(docx, tmp_path / "caller-out")
    assert [b.get("img_path") for b in fetched] == [b.get("img_path") for b in local]
    assert [b.get("img_path") for b in fetched] != [b.get("img_path") for b in parsed]
    assert (cache.hits, cache.misses) == (0, 1)  # a fetch is not a lookup


class Payload:
    """Unpickling this creates ``marker``: what an attacker's entry would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_entry_is_refused_not_run(redis_server, tmp_path, docx):
    cache = make_cache(redis_server, tmp_path)
    key = content_key(docx, "ragopt", "1")
    marker = tmp_path / "pwned"
    client = redis_client(redis_server.url)
    calls = []
    for plant in (
        lambda: client.hset(f"{PREFIX}:entry:{key}", mapping={"item": pickle.dumps(Payload(marker))}),
        lambda: client.set(f"{PREFIX}:entry:{key}", pickle.dumps(Payload(marker))),  # not even a hash
    ):
        cache.clear()
        plant()
        with pytest.warns(CacheWarning, match="refused"):
            content = cache.get_or_parse(docx, parse_counting(calls, tmp_path / "out"), "ragopt", "1")
        assert content == offline.parse_file(docx, tmp_path / "out")  # parsed again instead
    assert not marker.exists()
    assert len(calls) == 2 and cache.corrupt_entries_recovered == 2
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload was live: unpickled, it runs
    assert marker.exists()


def test_an_entry_naming_a_file_that_is_not_its_own_image_is_refused(redis_server, tmp_path, docx):
    cache = make_cache(redis_server, tmp_path)
    key = content_key(docx, "ragopt", "1")
    cache.get_or_parse(docx, parse_counting([], tmp_path / "out"), "ragopt", "1")
    client = redis_client(redis_server.url)
    item = json.loads(client.hget(f"{PREFIX}:entry:{key}", "item"))
    item["content_list"].append({"type": "image", "img_path": "/etc/passwd"})  # would reach the vision model
    client.hset(f"{PREFIX}:entry:{key}", "item", json.dumps(item))
    with pytest.warns(CacheWarning, match="not one of its images"):
        assert cache.get(key) is None
    assert cache.corrupt_entries_recovered == 1 and cache.stats()["entries"] == 0


def test_bounds_evict_the_least_recently_used_and_expire_old_entries(redis_server, tmp_path):
    cache = make_cache(redis_server, tmp_path, max_entries=2, ttl_hours=1)
    blocks = lambda n: [{"type": "text", "text": f"document {n}", "page_idx": 0}]
    cache.put("a", blocks("a"), 0.1)
    cache.put("b", blocks("b"), 0.1)
    assert cache.get("a") == blocks("a")  # a is now the more recently used
    cache.put("c", blocks("c"), 0.1)
    assert (cache.get("b"), cache.evictions) == (None, 1)
    client = redis_client(redis_server.url)
    item = json.loads(client.hget(f"{PREFIX}:entry:c", "item"))
    client.hset(f"{PREFIX}:entry:c", "item", json.dumps({**item, "stored_at": item["stored_at"] - 7200}))
    assert (cache.get("c"), cache.expirations) == (None, 1)
    assert 0 < client.pttl(f"{PREFIX}:entry:a") <= 3600 * 1000  # Redis frees what nobody reads, too
    assert cache.stats()["entries"] == 1


def test_cache_storage_may_be_a_redis_url(redis_server, tmp_path):
    cache = ContentCache.from_config(RagoptConfig(cache_storage=redis_server.url, cache_ttl_hours=2))
    assert isinstance(cache, RedisContentCache) and cache.ttl_hours == 2 and cache.location == redis_server.url
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing about the folder cache's location checks applies
        assert cache.get("missing") is None
