import hashlib
import multiprocessing
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest

from ragopt.cache.content_cache import (
    ContentCache,
    UnsafeCacheLocation,
    content_key,
    default_location,
    file_sha256,
)

PARSER = ("fakeparser", "1.0")


class CountingParser:
    """parse_fn that records its calls and returns a content_list naming the file's text."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path, **options):
        self.calls += 1
        return [{"type": "text", "text": Path(path).read_text(), "page_idx": 0}]


def slow_parse(path, **options):
    time.sleep(0.3)  # long enough for both workers to miss and write together
    return [{"type": "text", "text": "x" * 200_000, "page_idx": 0}]


def parse_in_worker(cache, path, barrier, results):
    barrier.wait()
    cache.get_or_parse(path, slow_parse, *PARSER)
    results.put(cache.stats())


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "docs" / "report.pdf"
    path.parent.mkdir()
    path.write_text("quarterly numbers")
    return path


@pytest.fixture
def cache(tmp_path):
    return ContentCache(tmp_path / "cache")


def entry_files(location):
    return list(Path(location).glob("*/output.pkl"))


def test_renamed_copied_and_touched_files_hit(cache, doc, tmp_path):
    parse = CountingParser()
    first = cache.get_or_parse(doc, parse, *PARSER)

    renamed = doc.with_name("renamed.pdf")
    doc.rename(renamed)
    copied = tmp_path / "elsewhere" / "copy.pdf"
    copied.parent.mkdir()
    shutil.copy(renamed, copied)
    os.utime(copied, (1_000_000, 1_000_000))

    for path in (renamed, copied):
        assert cache.get_or_parse(path, parse, *PARSER) == first
    assert parse.calls == 1
    assert cache.stats()["hits"] == 2


def test_changed_content_misses(cache, doc):
    parse = CountingParser()
    cache.get_or_parse(doc, parse, *PARSER)
    doc.write_text("restated numbers")

    assert cache.get_or_parse(doc, parse, *PARSER)[0]["text"] == "restated numbers"
    assert parse.calls == 2


def test_relevant_option_misses_irrelevant_option_hits(cache, doc, tmp_path):
    parse = CountingParser()
    cache.get_or_parse(doc, parse, *PARSER, lang="en", output_dir=str(tmp_path / "a"))

    cache.get_or_parse(doc, parse, *PARSER, lang="en", output_dir=str(tmp_path / "b"))
    assert parse.calls == 1
    cache.get_or_parse(doc, parse, *PARSER, lang="fr", output_dir=str(tmp_path / "a"))
    assert parse.calls == 2


def test_parser_version_is_part_of_the_key(doc):
    assert content_key(doc, "mineru", "2.5") != content_key(doc, "mineru", "2.6")
    assert content_key(doc, "mineru", "2.5") == content_key(
        doc, "mineru", "2.5", device="cuda", lang=None
    )


def test_disabled_cache_never_hits_and_never_writes(doc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    cache = ContentCache(location=None)
    parse = CountingParser()

    for _ in range(3):
        cache.get_or_parse(doc, parse, *PARSER)
    cache.put("k" * 64, [{"type": "text"}], 1.0)

    assert parse.calls == 3
    assert cache.get("k" * 64) is None
    assert cache.stats()["hits"] == 0 and cache.stats()["misses"] == 4
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("damage", [b"", b"not a pickle at all"])
def test_corrupt_entry_is_a_miss_and_is_rewritten(cache, doc, damage):
    parse = CountingParser()
    cache.get_or_parse(doc, parse, *PARSER)
    [stored] = entry_files(cache.location)
    stored.write_bytes(damage)

    assert cache.get_or_parse(doc, parse, *PARSER)[0]["text"] == "quarterly numbers"
    assert parse.calls == 2
    assert cache.stats()["corrupt_entries_recovered"] == 1
    cache.get_or_parse(doc, parse, *PARSER)
    assert parse.calls == 2


def test_truncated_entry_is_a_miss(cache, doc):
    cache.get_or_parse(doc, CountingParser(), *PARSER)
    [stored] = entry_files(cache.location)
    stored.write_bytes(stored.read_bytes()[:20])

    assert cache.get(content_key(doc, *PARSER)) is None
    assert cache.stats()["corrupt_entries_recovered"] == 1


@pytest.mark.parametrize("mode", [0o770, 0o777])
def test_shared_location_is_refused(tmp_path, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)

    with pytest.raises(UnsafeCacheLocation, match="unpickled"):
        ContentCache(shared)
    with pytest.raises(PermissionError):
        ContentCache(shared / "cache")  # a writable parent is as bad


def test_new_location_is_private(tmp_path):
    location = tmp_path / "a" / "b" / "cache"
    ContentCache(location)
    for directory in (location, location.parent, location.parent.parent):
        assert directory.stat().st_mode & 0o777 == 0o700


def test_default_location_is_per_user_not_tmp():
    location = default_location()
    assert location.name == "parse-cache" and location.parent.name == "ragopt"
    assert not str(location).startswith("/tmp")


def test_two_processes_writing_one_key(cache, doc):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=parse_in_worker, args=(cache, doc, barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    worker_stats = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    reader = ContentCache(cache.location)
    assert reader.get(content_key(doc, *PARSER)) == slow_parse(doc)
    [entry_dir] = [p for p in cache.location.iterdir() if p.is_dir()]
    assert [p.name for p in entry_dir.iterdir()] == ["output.pkl"]  # no temp files
    cache.merge_stats(worker_stats)
    assert cache.stats()["hits"] + cache.stats()["misses"] == 2


def test_pickled_copy_keeps_settings_and_starts_counting_from_zero(tmp_path, doc):
    cache = ContentCache(tmp_path / "cache", size_limit_bytes=10**6, ttl_hours=2)
    cache.get_or_parse(doc, CountingParser(), *PARSER)

    copy = pickle.loads(pickle.dumps(cache))

    assert (copy.location, copy.size_limit_bytes, copy.ttl_hours) == (
        cache.location,
        10**6,
        2,
    )
    assert copy.stats()["misses"] == 0
    assert copy.get(content_key(doc, *PARSER)) is not None


def test_size_limit_evicts_least_recently_used(tmp_path):
    cache = ContentCache(tmp_path / "cache", size_limit_bytes=35_000)
    payload = [{"type": "text", "text": "x" * 10_000}]
    long_ago = time.time() - 3600
    for age, key in enumerate("abc"):  # stored an hour ago, a minute apart: a, then b, then c
        cache.put(key * 64, payload, 1.0)
        entry = tmp_path / "cache" / (key * 64) / "output.pkl"
        os.utime(entry, (long_ago + 60 * age, entry.stat().st_mtime))
    assert cache.get("a" * 64) is not None  # read now: a is the most recent

    cache.put("d" * 64, payload, 1.0)

    assert cache.stats()["evictions"] == 1
    assert cache.get("b" * 64) is None
    assert all(cache.get(key * 64) is not None for key in "acd")


def test_ttl_expired_entry_is_a_miss_and_removed(tmp_path):
    cache = ContentCache(tmp_path / "cache", ttl_hours=1)
    cache.put("a" * 64, [{"type": "text"}], 1.0)
    cache.put("b" * 64, [{"type": "text"}], 1.0)
    two_hours_ago = time.time() - 2 * 3600
    os.utime(cache.location / ("a" * 64) / "output.pkl", (two_hours_ago,) * 2)

    assert cache.get("a" * 64) is None
    assert cache.get("b" * 64) is not None
    assert cache.stats()["expirations"] == 1
    assert not (cache.location / ("a" * 64)).exists()


def test_reduce_size_sweeps_expired_entries(tmp_path):
    cache = ContentCache(tmp_path / "cache", ttl_hours=1)
    cache.put("a" * 64, [{"type": "text"}], 1.0)
    os.utime(cache.location / ("a" * 64) / "output.pkl", (0, 0))

    cache.reduce_size()

    assert cache.stats()["entries"] == 0 and cache.stats()["expirations"] == 1


def test_decorator_and_get_or_parse_share_stats(cache, doc):
    parse = CountingParser()
    cached_parse = cache.cached(*PARSER)(parse)

    cached_parse(doc)
    cache.get_or_parse(doc, parse, *PARSER)
    cached_parse(doc, output_dir="/elsewhere")

    assert parse.calls == 1
    assert (cache.stats()["hits"], cache.stats()["misses"]) == (2, 1)


def test_parse_seconds_saved_accumulates(cache):
    cache.put("a" * 64, [{"type": "text"}], 1.5)
    cache.put("b" * 64, [{"type": "text"}], 2.0)

    for key in ("a" * 64, "a" * 64, "b" * 64):
        cache.get(key)

    assert cache.stats()["parse_seconds_saved"] == pytest.approx(5.0)
    frame = cache.stats_frame()
    assert frame.loc[0, "hits"] == 3 and frame.loc[0, "hit_rate"] == 1.0


def test_images_survive_deletion_of_parser_output_dir(cache, doc, tmp_path):
    output_dir = tmp_path / "mineru-out"

    def parse_with_image(path, **options):
        (output_dir / "images").mkdir(parents=True)
        image = output_dir / "images" / "fig1.jpg"
        image.write_bytes(b"\xff\xd8jpeg bytes")
        return [{"type": "image", "img_path": str(image)}, {"type": "text"}]

    cache.get_or_parse(doc, parse_with_image, *PARSER)
    shutil.rmtree(output_dir)

    [image_item, text_item] = cache.get_or_parse(doc, parse_with_image, *PARSER)
    assert Path(image_item["img_path"]).read_bytes() == b"\xff\xd8jpeg bytes"
    assert Path(image_item["img_path"]).is_relative_to(cache.location)
    assert text_item == {"type": "text"}


def test_missing_cached_image_makes_the_entry_a_miss(cache, doc, tmp_path):
    image = tmp_path / "fig.png"
    image.write_bytes(b"png")
    cache.put("a" * 64, [{"type": "image", "img_path": str(image)}], 1.0)
    next((cache.location / ("a" * 64)).glob("*.png")).unlink()

    assert cache.get("a" * 64) is None
    assert cache.stats()["corrupt_entries_recovered"] == 1


def test_streaming_hash_equals_hashlib(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)  # several chunks plus a partial one
    path = tmp_path / "big.bin"
    path.write_bytes(data)

    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
