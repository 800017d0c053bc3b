"""``ragopt cache stats`` and ``ragopt cache prune`` on a real cache folder."""

from __future__ import annotations

import json
import os
import time

from ragopt.cache.content_cache import ContentCache
from ragopt.cli import main

PAYLOAD = [{"type": "text", "text": "x" * 10_000}]


def _filled(tmp_path):
    location = tmp_path / "cache"
    cache = ContentCache(location)
    now = time.time()
    for age_hours, key in ((3, "a"), (2, "b"), (0, "c")):  # stored and last read 3 h, 2 h and just now
        cache.put(key * 64, PAYLOAD, 1.0)
        entry = location / (key * 64) / "output.pkl"
        os.utime(entry, (now - age_hours * 3600, now - age_hours * 3600))
    return location


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_stats_counts_the_entries_and_bytes(tmp_path, capsys):
    location = _filled(tmp_path)
    assert main(["cache", "stats", "--location", str(location)]) == 0
    stats = _last_json(capsys)
    assert stats["entries"] == 3 and stats["bytes_stored"] > 30_000


def test_prune_by_age_then_by_entries_keeps_the_most_recent(tmp_path, capsys):
    location = _filled(tmp_path)
    assert main(["cache", "prune", "--location", str(location), "--older-than", "150m"]) == 0
    assert _last_json(capsys)["after"]["entries"] == 2  # a, stored 3 h ago, is gone
    assert main(["cache", "prune", "--location", str(location), "--max-size", "1"]) == 0
    assert _last_json(capsys)["after"]["entries"] == 1
    cache = ContentCache(location)
    assert cache.get("c" * 64) is not None and cache.get("b" * 64) is None  # the least recently used went


def test_prune_needs_a_bound(tmp_path, capsys):
    assert main(["cache", "prune", "--location", str(_filled(tmp_path))]) == 2
