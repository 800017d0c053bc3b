"""The duplicate workload and the parse-cache benchmark's measurements, on tiny files.

``duplicate_workload`` makes renamed copies, copies in sub-folders and touched
originals; a cache keyed on content alone answers ``hit_rate_max`` of the
requests, RAG-Anything's path+mtime keyed cache fewer. A second ``ragopt``
ingestion of an unchanged corpus into the same working dir parses nothing and
asks the LLM nothing. The measurements are the benchmark's own functions
(``ragopt.measure.bench.cache``).
"""

import os
import shutil
from pathlib import Path

import pytest

from ragopt.config import RagoptConfig
from ragopt.measure.cache_workload import CACHES, cache_figures, cache_requests
from ragopt.measure.workloads import DUPLICATE_KINDS, corpus_files, duplicate_workload, touch_originals

TEXTS = {
    "alpha.txt": "Ada Okafor of Northwind Labs presented new results on solid-state batteries at a workshop in Lisbon.\n",
    "beta.md": "# Beta\n\nChen Moreau signed an agreement between Orion Systems and Cedar Health covering graph databases.\n",
    "gamma.txt": "Helios Energy opened a research office in Osaka to study fraud detection, led by Brian Lindqvist.\n",
}


@pytest.fixture(scope="module")
def bench():
    from ragopt.measure.bench import cache

    return cache


@pytest.fixture
def sources(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    paths = []
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
        paths.append(folder / name)
    # Same bytes as alpha under another name: one content, so one original.
    shutil.copyfile(folder / "alpha.txt", folder / "alpha_again.txt")
    return paths + [folder / "alpha_again.txt"]


def _relative(manifest, paths):
    return [Path(p).relative_to(manifest["out_dir"]).as_posix() for p in paths]


def test_manifest_counts_layout_and_hit_rate_max(sources, tmp_path):
    manifest = duplicate_workload(sources, tmp_path / "corpus", 0.5, seed=3)
    out_dir = Path(manifest["out_dir"])

    assert manifest["unique_contents"] == 3 and len(manifest["originals"]) == 3  # alpha_again is alpha
    # f = D / (U + D) with U = 3 -> D = 3, one of each kind
    assert manifest["counts"] == {"originals": 3, "renamed": 1, "copied": 1, "touched": 1}
    assert len(manifest["duplicates"]) == manifest["duplicate_requests"] == 3
    assert manifest["requests"] == 6 and manifest["hit_rate_max"] == 0.5
    # The files on disk are exactly the corpus: originals + renamed + copied (touched ones are originals).
    assert manifest["files"] == [str(p) for p in corpus_files(out_dir)]
    assert len(manifest["files"]) == 5
    assert manifest["passes"] == [manifest["files"], manifest["touched"]]
    assert sum(map(len, manifest["passes"])) == manifest["requests"]

    for row in manifest["duplicates"]:
        path, original = Path(row["path"]), Path(row["original"])
        assert str(original) in manifest["originals"]
        assert path.read_bytes() == original.read_bytes()
        assert manifest["sha256"][str(path)] == manifest["sha256"][str(original)]
        if row["kind"] == "renamed":
            assert path.parent == original.parent and path.name != original.name
        elif row["kind"] == "copied":
            assert path.parent != original.parent and path.name == original.name
        else:
            assert row["kind"] == "touched" and path == original and str(path) in manifest["touched"]
    assert set(manifest["duplicate_of"]) == {r["path"] for r in manifest["duplicates"] if r["kind"] != "touched"}


def test_manifest_is_deterministic_by_seed(sources, tmp_path):
    def layout(folder, seed):
        m = duplicate_workload(sources, tmp_path / folder, 0.8, seed=seed)
        return _relative(m, m["files"]), [(r["kind"], *_relative(m, [r["path"], r["original"]])) for r in m["duplicates"]]

    assert layout("a", 7) == layout("b", 7)
    assert layout("a2", 1) != layout("b2", 2)


def test_many_duplicates_touch_each_original_once_at_most(sources, tmp_path):
    manifest = duplicate_workload(sources, tmp_path / "corpus", 0.8, seed=0)
    assert manifest["duplicate_requests"] == 12  # 0.8 * 3 / 0.2
    assert manifest["counts"]["touched"] == 3 == len(set(manifest["touched"]))
    assert sum(manifest["counts"][k] for k in DUPLICATE_KINDS) == 12
    assert manifest["hit_rate_max"] == pytest.approx(0.8)


def test_touched_files_keep_their_bytes_and_change_mtime(sources, tmp_path):
    manifest = duplicate_workload(sources, tmp_path / "corpus", 0.5, seed=3)
    before = {p: (Path(p).read_bytes(), os.stat(p).st_mtime_ns) for p in manifest["files"]}
    touched = touch_originals(manifest)
    assert touched == manifest["touched"] and touched
    for path, (data, mtime) in before.items():
        assert Path(path).read_bytes() == data
        if path in touched:
            assert os.stat(path).st_mtime_ns != mtime
        else:
            assert os.stat(path).st_mtime_ns == mtime


def test_bad_arguments_are_refused(sources, tmp_path):
    with pytest.raises(ValueError):
        duplicate_workload(sources, tmp_path / "x", 1.0)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other.txt").write_text("not ours")
    with pytest.raises(FileExistsError):
        duplicate_workload(sources, tmp_path / "busy", 0.5)


def test_ragopt_reaches_hit_rate_max_raganything_does_not(sources, tmp_path):
    manifest = duplicate_workload(sources, tmp_path / "corpus", 0.5, seed=3)
    requests = cache_requests(manifest, tmp_path / "caches", RagoptConfig(sim_preset="fast"), rerun=False)
    ragopt, raganything = (cache_figures(requests, name) for name in CACHES)
    assert len(requests) == manifest["requests"]

    assert ragopt["hit_rate"] == manifest["hit_rate_max"] == 0.5
    assert ragopt["parser_calls"] == manifest["unique_contents"]
    assert raganything["hit_rate"] < manifest["hit_rate_max"]
    assert raganything["parser_calls"] == raganything["misses"] == manifest["requests"] - raganything["hits"]


def test_raganything_hits_are_counted(sources, tmp_path):
    """The counter does see RAG-Anything's hits: the same unchanged path asked twice."""
    path = str(sources[0])
    manifest = {"passes": [[path], [path]], "touched": [], "duplicates": [], "files": [path], "out_dir": str(sources[0].parent)}
    figures = cache_figures(cache_requests(manifest, tmp_path / "caches", RagoptConfig(sim_preset="fast"), rerun=False),
                            "RAG-Anything parse cache")
    assert (figures["hits"], figures["misses"], figures["parser_calls"]) == (1, 1, 1)


def test_second_ingestion_of_an_unchanged_corpus_parses_nothing_and_calls_no_llm(bench, sources, tmp_path):
    manifest = duplicate_workload(sources, tmp_path / "corpus", 0.5, seed=3)
    figures = bench.measure_reingest(
        manifest, RagoptConfig(sim_preset="fast"), tmp_path / "working-dir", tmp_path / "parse-cache"
    )
    first = figures["first"]
    assert first["docs_ok"] == manifest["unique_contents"] and first["docs_failed"] == 0
    assert first["parser_calls"] == manifest["unique_contents"]
    assert first["llm_calls"] > 0
    assert figures["second_run_parser_calls"] == 0
    assert figures["second_run_llm_calls"] == 0
    assert figures["second"]["docs_skipped"] == len(manifest["files"])
    # Touched originals are the same documents: still nothing to do.
    assert figures["touched_run_parser_calls"] == 0 and figures["touched_run_llm_calls"] == 0
    assert figures["simulated_llm"]
