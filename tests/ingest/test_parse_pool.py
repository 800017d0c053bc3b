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
from ragopt.ingest.parse_pool import OFFLINE, parse_through_cache
for path in {docx!r}:
    content, *_ = parse_through_cache(path, None, {str(tmp_path / "parsed")!r}, ContentCache(None), OFFLINE)
    assert content
print(gc.collect(), gc.get_freeze_count() > 0)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # python-docx's cycles (each holding a whole lxml tree) were already freed: nothing left to collect.
    assert done.stdout.split() == ["0", "True"]
