"""LightRAG's storage files written atomically; a corrupt one is a clear error naming it and its backup.

- a writer killed with SIGKILL in the middle of a write leaves the previous
  file whole (LightRAG's own in-place write, the control, leaves half a file);
- a truncated JSON store, GraphML graph, vector store or Faiss index fails to
  open with ``CorruptStorageFile`` naming the file, never as an empty store,
  and the recovery the message gives (restore ``<file>.bak``) opens it again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ragopt.compat import storage_files

STALLING_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from ragopt.compat.storage_files import atomic_write

    class Stalling:  # stops in the middle of the write, says so, and waits for the kill
        def __init__(self, file):
            self.file = file
        def write(self, data):
            self.file.write(data)
            self.file.flush()
            print("stalled", flush=True)
            time.sleep(3600)

    path, how = sys.argv[1], sys.argv[2]
    new = {"version": "new", "rows": [str(i) * 40 for i in range(20000)]}
    if how == "atomic":
        atomic_write(path, lambda f: json.dump(new, Stalling(f)))
    else:  # what LightRAG 1.4.16 does: truncate, then write in place
        with open(path, "w", encoding="utf-8") as f:
            json.dump(new, Stalling(f))
    """
)


def _kill_mid_write(tmp_path: Path, how: str) -> Path:
    target = tmp_path / "kv_store_text_chunks.json"
    target.write_text(json.dumps({"version": "old"}), encoding="utf-8")
    script = tmp_path / "writer.py"
    script.write_text(STALLING_WRITER)
    child = subprocess.Popen([sys.executable, str(script), str(target), how], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "stalled"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return target


def test_a_writer_killed_mid_write_leaves_the_previous_file_whole(tmp_path):
    target = _kill_mid_write(tmp_path, "atomic")
    assert json.loads(target.read_text(encoding="utf-8")) == {"version": "old"}
    assert len(list(tmp_path.glob("kv_store_text_chunks.json.*.tmp"))) == 1  # the torn temporary file
    assert storage_files.remove_stale_temporaries(str(target)) == 1  # its writer is dead: opening removes it
    assert not list(tmp_path.glob("*.tmp"))


def test_the_control_a_write_in_place_killed_mid_write_leaves_half_a_file(tmp_path):
    target = _kill_mid_write(tmp_path, "in place")
    with pytest.raises(json.JSONDecodeError):
        json.loads(target.read_text(encoding="utf-8"))


def test_each_write_keeps_the_file_it_replaces_as_bak_and_the_sanitizing_contract(tmp_path):
    target = tmp_path / "kv_store_full_docs.json"
    assert storage_files._write_json({"a": 1}, str(target)) is False
    assert storage_files._write_json({"a": 2}, str(target)) is False
    assert json.loads(target.read_text()) == {"a": 2}
    assert json.loads(Path(str(target) + ".bak").read_text()) == {"a": 1}
    assert storage_files._write_json({"a": "bad \ud800 surrogate"}, str(target)) is True  # LightRAG then reloads
    assert json.loads(target.read_text()) == {"a": "bad  surrogate"}
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_unreadable_file_is_an_error_naming_it_a_missing_one_is_a_new_store(tmp_path):
    import lightrag.utils as utils

    storage_files.protect_storage_files()
    assert utils.load_json(str(tmp_path / "absent.json")) is None
    torn = tmp_path / "kv_store_doc_status.json"
    torn.write_text('{"doc-1": {"status": "proc', encoding="utf-8")
    with pytest.raises(storage_files.CorruptStorageFile, match="kv_store_doc_status.json is corrupt") as error:
        utils.load_json(str(torn))
    assert "no previous copy" in str(error.value)


# -- a real knowledge base, truncated file by file -------------------------------------

FILES = ["kv_store_text_chunks.json", "kv_store_doc_status.json", "graph_chunk_entity_relation.graphml",
         "vdb_entities.json"]


@pytest.fixture(scope="module")
def knowledge_bases(tmp_path_factory):
    """A knowledge base on LightRAG's default files and one with Faiss vectors, two documents each."""
    from ragopt.config import RagoptConfig
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.workloads import synthetic_corpus

    corpus = synthetic_corpus(tmp_path_factory.mktemp("corpus"), 2, seed=3, paragraphs_per_doc=1)
    built = {}
    for name, overrides in (("files", {}), ("faiss", {"vector_storage": "FaissVectorDBStorage"})):
        if name == "faiss":
            pytest.importorskip("faiss")
        config = RagoptConfig(sim_preset="fast", **overrides)
        kb = tmp_path_factory.mktemp(f"kb-{name}")
        rag = build_rag(config, kb, optimized=True)
        try:
            assert ingest(rag, corpus, config=config, progress=False).counts()["ok"] == 2
        finally:
            release_rag(rag)
        built[name] = (config, kb)
    return built


def _open(config, kb):
    from ragopt.aio import run_sync
    from ragopt.compat.raganything import ensure_initialized
    from ragopt.engine.build import build_rag
    from ragopt.engine.release import arelease_rag

    async def opened():
        rag = build_rag(config, kb)
        try:
            await ensure_initialized(rag)
            return len(await rag.lightrag.doc_status.get_by_ids(["x"]))
        finally:
            await arelease_rag(rag)

    return run_sync(opened())


def _truncate_and_open(config, kb: Path, name: str) -> str:
    target = next(kb.rglob(name))
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(Exception) as error:  # from LightRAG's constructor or RAG-Anything's initialization
        _open(config, kb)
    return str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_a_truncated_storage_file_is_a_clear_error_and_its_bak_restores_it(knowledge_bases, tmp_path, name):
    config, built = knowledge_bases["files"]
    kb = tmp_path / "kb"
    shutil.copytree(built, kb)
    message = _truncate_and_open(config, kb, name)
    target = next(kb.rglob(name))
    assert f"storage file {target} is corrupt" in message, message
    backup = Path(str(target) + ".bak")
    assert f"mv '{backup}' '{target}'" in message, message
    os.replace(backup, target)  # the recovery the message gives
    assert _open(config, kb) == 1


@pytest.mark.slow
def test_a_truncated_faiss_index_is_an_error_not_an_empty_index(knowledge_bases, tmp_path):
    config, built = knowledge_bases["faiss"]
    kb = tmp_path / "kb"
    shutil.copytree(built, kb)
    index = next(p for p in kb.rglob("faiss_index_entities.index"))
    message = _truncate_and_open(config, kb, index.name)
    assert f"storage file {index} is corrupt" in message, message
