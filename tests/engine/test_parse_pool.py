"""The parse pool's workers: no reference cycles left behind, recycling, the rag's parser."""

import subprocess
import sys
_LEAKED = []


def test_parse_worker_leaves_no_reference_cycles_behind(tmp_path):
    # In a process of its own: the worker freezes the collector's view of its modules.
    from ragopt.measure.workloads import synthetic_corpus

    docx = [str(p) for p in synthetic_corpus(tmp_path / "corpus", 14, seed=3) if p.suffix == ".docx"]
    assert len(docx) == 2
    code = f"""
import gc, sys
from ragopt.cache.content_cache import ContentCache
from ragopt.engine.parse_pool import OFFLINE, parse_through_cache
for path in {docx!r}:
    content, *_ = parse_through_cache(path, None, {str(tmp_path / "parsed")!r}, ContentCache(None), OFFLINE)
    assert content
print(gc.collect(), gc.get_freeze_count() > 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # python-docx's cycles (each holding a whole lxml tree) were already freed: nothing left to collect.
    assert done.stdout.split() == ["0", "True"]


def _device_of_this_worker():
    import os
    import time

    time.sleep(0.3)  # long enough that the pool's two workers both take tasks
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_a_gpu_parser_gets_one_process_per_visible_gpu_each_pinned_to_its_own(monkeypatch):
    from ragopt.engine import parse_pool

    gpu_parser = parse_pool.ParserSpec("mineru", "2.5", uses_gpu=True)
    monkeypatch.setattr(parse_pool, "visible_gpus", lambda: ["0", "1"])  # two cards, as CUDA_VISIBLE_DEVICES=0,1 shows
    assert parse_pool.pool_size(gpu_parser) == 2
    assert parse_pool.pool_size(gpu_parser, workers=1) == 1  # WORKER_POOL_SIZE wins
    assert parse_pool.pool_size(parse_pool.OFFLINE) == len(__import__("os").sched_getaffinity(0))  # a CPU parser: the cores
    pool = parse_pool.parse_pool(gpu_parser)
    try:
        devices = {future.result() for future in [pool.submit(_device_of_this_worker) for _ in range(6)]}
    finally:
        parse_pool.release_parse_pools()
    assert devices == {"0", "1"}  # never two parses on one card


def test_the_parse_cache_key_holds_the_parser_its_version_and_result_changing_options(tmp_path):
    from ragopt.cache.content_cache import ContentCache
    from ragopt.engine.parse_pool import ParserSpec, parse_through_cache

    doc = tmp_path / "note.txt"
    doc.write_text("Ada Okafor of Northwind Labs presented new results in Lisbon.\n")
    cache = ContentCache(tmp_path / "cache")

    def hit(spec):
        return parse_through_cache(str(doc), None, str(tmp_path / "out"), cache, spec)[1]

    english = ParserSpec("ragopt", "1", options=(("lang", "en"),))
    assert hit(english) is False and hit(english) is True
    assert hit(ParserSpec("ragopt", "1", options=(("lang", "fr"),))) is False  # another language: another parse
    assert hit(ParserSpec("ragopt", "2", options=(("lang", "en"),))) is False  # another parser version
    assert hit(ParserSpec("ragopt", "1", options=(("lang", "en"), ("device", "cuda:1")))) is True  # a device changes no result
