"""LightRAG's storage files written atomically, and a clear error for one that is corrupt anyway.

LightRAG 1.4.16's default storages truncate their file and write it in place
(``open(path, "w")`` then ``json.dump`` / ``nx.write_graphml``), so a process
killed during a flush leaves half a file, and the next start fails on it.
``protect_storage_files()`` replaces, once per process, each writer by one that
writes a temporary file in the same folder, flushes and fsyncs it, keeps the
file it replaces as ``<name>.bak`` (a hard link: no copy) and renames the new
one over it, so a reader sees the old file or the new one, never half of one:

- ``lightrag.utils.write_json`` (JSON KV and doc-status stores; both modules
  import it by name, so their names are replaced too), keeping its contract:
  True when the sanitizing encoder had to be used;
- ``NetworkXStorage.write_nx_graph`` (the GraphML graph);
- ``nano_vectordb.dbs.NanoVectorDB.save`` (the vector stores), and Faiss's
  ``_save_faiss_index`` when faiss-cpu is installed (LightRAG writes its
  index in place; only its metadata went through a rename).

Their loaders are wrapped too: a file that does not parse raises
``CorruptStorageFile`` naming it, its ``.bak`` and how to recover, never an
empty store (LightRAG itself raises a bare JSONDecodeError or ParseError from
deep inside its constructor, and its Faiss loader starts an empty index). Temporary files a killed writer left behind are
removed when the store is next opened.

Cost, measured on the sample corpus (9 documents, fast simulator preset,
ragopt's optimizations on, 2 shared cores): ~260 storage flushes per ingestion, 7.5 MB
written at the end; the atomic writers spend 1.63 s against 1.54 s in place
(+0.09 s, median of 3; fsync is most of it), under 1 % of the 20-30 s ingestion.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

BACKUP_SUFFIX = ".bak"
_TEMP_SUFFIX = ".tmp"


class CorruptStorageFile(RuntimeError):
    """A storage file of a knowledge base that cannot be read; the message says how to recover."""

    def __init__(self, path: str, error: BaseException):
        self.path = path
        backup = Path(path + BACKUP_SUFFIX)
        if backup.is_file():
            written = datetime.fromtimestamp(backup.stat().st_mtime).isoformat(timespec="seconds")
            recovery = (f"Its previous complete version is {backup} (written {written}): `mv '{backup}' '{path}'` "
                        "restores it; what the last write added to this file is then missing, so re-ingest the "
                        "documents processed last (or rebuild the knowledge base).")
        else:
            recovery = ("There is no previous copy (ragopt keeps one as <file>.bak from its first write of a file): "
                        "rebuild the knowledge base, or repair the file by hand.")
        super().__init__(f"storage file {path} is corrupt ({type(error).__name__}: {error}), so the knowledge base "
                         f"cannot be opened. {recovery}")


# ----------------------------------------------------------------- writing

write_failures = 0
"""Graph and vector writes that raised, in this process: LightRAG logs those and goes on, so
whoever needs to know that a flush reached disk compares this before and after."""


def _fsync_folder(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # a platform that cannot open a folder (Windows): the rename is all there is
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _keep_backup(path: str) -> None:
    """``path`` as ``path.bak``, atomically: the file being replaced is complete (it was
    written this way, or read successfully when the store opened)."""
    if not os.path.exists(path):
        return
    staged = _temporary_name(path + BACKUP_SUFFIX)
    try:
        os.link(path, staged)
    except OSError:  # a file system without hard links
        import shutil

        shutil.copy2(path, staged)
    os.replace(staged, path + BACKUP_SUFFIX)


def _temporary_name(path: str) -> str:
    # The pid in the name tells a later opener whether the writer is still alive.
    return f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}{_TEMP_SUFFIX}"


def atomic_write(path: str, write: Callable[[Any], None], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)``: a temporary file beside it, fsynced, renamed over it."""
    path = os.path.abspath(path)
    temporary = _temporary_name(path)
    try:
        # "x": created with the usual permissions (mkstemp's are 0600), never over another file.
        with open(temporary, "xb" if binary else "x", **({} if binary else {"encoding": "utf-8"})) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        _keep_backup(path)
        os.replace(temporary, path)
        _fsync_folder(os.path.dirname(path))
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _write_json(json_obj: Any, file_name: str) -> bool:
    """``lightrag.utils.write_json``, atomic: False, or True when the sanitizing encoder was needed."""
    from lightrag.utils import SanitizingJSONEncoder

    try:
        atomic_write(file_name, lambda f: json.dump(json_obj, f, indent=2, ensure_ascii=False))
        return False
    except (UnicodeEncodeError, UnicodeDecodeError):
        atomic_write(file_name, lambda f: json.dump(json_obj, f, indent=2, ensure_ascii=False, cls=SanitizingJSONEncoder))
        return True


def _counting_failures(writer: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(writer)
    def counted(*args: Any, **kwargs: Any) -> None:
        global write_failures
        try:
            writer(*args, **kwargs)
        except BaseException:
            write_failures += 1
            raise

    return counted


@_counting_failures
def _write_nx_graph(graph: Any, file_name: str, workspace: str = "_") -> None:
    """``NetworkXStorage.write_nx_graph``, atomic (``nx.write_graphml`` takes an open binary file)."""
    import networkx as nx

    atomic_write(file_name, lambda f: nx.write_graphml(graph, f), binary=True)


@_counting_failures
def _save_nano_vectordb(self: Any) -> None:
    """``NanoVectorDB.save``, atomic. Relies on its name-mangled ``__storage`` dict and
    ``dbs.array_to_buffer_string``, as the original does."""
    from nano_vectordb import dbs

    storage = self._NanoVectorDB__storage
    content = {**storage, "matrix": dbs.array_to_buffer_string(storage["matrix"])}
    atomic_write(self.storage_file, lambda f: json.dump(content, f, ensure_ascii=False))


@_counting_failures
def _save_faiss_index(self: Any) -> None:
    """``FaissVectorDBStorage._save_faiss_index``, atomic: the index (written in place by LightRAG),
    then its metadata. Relies on ``_index``, ``_id_to_meta``, ``_faiss_index_file`` and ``_meta_file``."""
    import faiss

    index = faiss.serialize_index(self._index)
    meta = {str(fid): {k: v for k, v in row.items() if k != "__vector__"} for fid, row in self._id_to_meta.items()}
    atomic_write(self._faiss_index_file, lambda f: f.write(index.tobytes()), binary=True)
    atomic_write(self._meta_file, lambda f: json.dump(meta, f))


# ----------------------------------------------------------------- reading

def _writer_alive(temporary: Path) -> bool:
    try:
        os.kill(int(temporary.name.rsplit(".", 3)[-3]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(path: str) -> int:
    """Delete the temporary files of ``path`` whose writer is dead (killed mid-write); returns how many."""
    target = Path(path)
    removed = 0
    for temporary in target.parent.glob(f"{target.name}.*{_TEMP_SUFFIX}"):  # its own and its backup's
        if _writer_alive(temporary):
            continue
        try:
            temporary.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _checked_loader(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """``load(path)`` raising ``CorruptStorageFile`` for a file that exists but does not parse."""

    def load_checked(file_name: str, *args: Any, **kwargs: Any) -> Any:
        remove_stale_temporaries(file_name)
        try:
            return load(file_name, *args, **kwargs)
        except Exception as error:
            if not os.path.exists(file_name):
                raise
            raise CorruptStorageFile(os.path.abspath(file_name), error) from error

    load_checked.__wrapped__ = load
    return load_checked


def _checked_faiss_loader(load: Callable[[Any], None]) -> Callable[[Any], None]:
    """``FaissVectorDBStorage._load_faiss_index`` raising ``CorruptStorageFile`` for an index or its
    metadata that does not read: LightRAG's own catches every error and starts an empty index.
    The files are read here once more for that (the index costs its size in memory for a moment)."""

    def load_checked(self: Any) -> None:
        import faiss

        checks = ((self._faiss_index_file, faiss.read_index),
                  (self._meta_file, lambda path: json.loads(Path(path).read_text(encoding="utf-8"))))
        for path, read in checks:
            remove_stale_temporaries(path)
        if os.path.exists(self._faiss_index_file):
            for path, read in checks:
                try:
                    read(path)
                except Exception as error:
                    raise CorruptStorageFile(os.path.abspath(path), error) from error
        load(self)

    load_checked.__wrapped__ = load
    return load_checked


# ----------------------------------------------------------------- installing

_installed = False


def protect_storage_files() -> None:
    """Install the atomic writers and checked loaders into LightRAG's default storages (once per process)."""
    global _installed
    if _installed:
        return
    import lightrag.kg.json_doc_status_impl as json_doc_status_impl
    import lightrag.kg.json_kv_impl as json_kv_impl
    import lightrag.utils as lightrag_utils
    from lightrag.kg.networkx_impl import NetworkXStorage
    from nano_vectordb import dbs

    checked_json = _checked_loader(lightrag_utils.load_json)
    for module in (lightrag_utils, json_kv_impl, json_doc_status_impl):
        module.write_json = _write_json
        module.load_json = checked_json
    NetworkXStorage.write_nx_graph = staticmethod(_write_nx_graph)
    NetworkXStorage.load_nx_graph = staticmethod(_checked_loader(NetworkXStorage.load_nx_graph))
    dbs.NanoVectorDB.save = _save_nano_vectordb
    dbs.load_storage = _checked_loader(dbs.load_storage)
    try:
        from lightrag.kg.faiss_impl import FaissVectorDBStorage
    except ImportError:  # faiss-cpu is optional
        pass
    else:
        FaissVectorDBStorage._save_faiss_index = _save_faiss_index
        FaissVectorDBStorage._load_faiss_index = _checked_faiss_loader(FaissVectorDBStorage._load_faiss_index)
    _installed = True
