import os

import numpy as np
import pytest
import torch

from ragopt.backends import embedding
from ragopt.backends.embedding import EMBEDDING_DIM, encode, load_model, minilm_embedding_func

TEXTS = [
    "Ada Okafor of Northwind Labs presented new results on solid-state batteries.",
    "Helios Energy opened a research office in Osaka.",
    "short",
    "In Lisbon, Chen Moreau signed an agreement between Orion Systems and Cedar Health covering graph databases, "
    "protein folding and the maintenance of wind turbines across three continents over the next decade.",
    "Vega Aerospace hired Julia Brandt.",
    "A pilot project on edge computing run by Atlas Freight in Denver was reviewed by Ivan Novak.",
    "Quantum Forge credits Kenji Silva with cutting the cost of carbon accounting by a third.",
    "Riverbend University",
    "Summit Analytics and Blue Harbor Bank co-authored a study of fraud detection.",
    "Reykjavik",
    "Emeka Haddad argued that satellite telemetry will matter more than clinical trial design.",
]


@pytest.fixture
def fresh_batchers(monkeypatch):
    """A batch size learned in one test must not carry into the next."""
    monkeypatch.setattr(embedding, "_batchers", {})


def plain_encode(texts):
    return load_model("cpu").encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def test_vectors_equal_plain_sentence_transformers(fresh_batchers):
    vectors = encode(TEXTS, device="cpu", batch_size=4)
    assert vectors.shape == (len(TEXTS), EMBEDDING_DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors, plain_encode(TEXTS), atol=1e-5)
    assert list(embedding.batcher("cpu", 4).stats["batch_sizes"]) == [4, 4, 3]


def test_cpu_forward_passes_come_in_few_token_lengths(fresh_batchers):
    """Padded to a multiple of CPU_PAD_TO_MULTIPLE: a bounded set of shapes (the worker's heap keeps one entry per shape)."""
    lengths = []
    hook = load_model("cpu")[0].register_forward_pre_hook(
        lambda module, args: lengths.append(args[0]["input_ids"].shape[1]))
    try:
        encode(TEXTS, device="cpu", batch_size=64)
    finally:
        hook.remove()
    assert len(lengths) == -(-len(TEXTS) // embedding.CPU_FORWARD_BATCH)
    assert all(length % embedding.CPU_PAD_TO_MULTIPLE == 0 for length in lengths), lengths


def test_a_text_the_model_reads_as_one_before_is_not_encoded_again(fresh_batchers, monkeypatch):
    """A key's description past 256 tokens with a fragment appended: the model reads the same input, so the memo
    serves its vector; a changed beginning, or a short text changed anywhere, is encoded."""
    monkeypatch.setattr(embedding, "_memos", {})
    long = "Northwind Labs\n" + " ".join(TEXTS * 6)
    appended = long + " Northwind Labs also opened an office in Osaka."
    encoded = []
    monkeypatch.setattr(embedding, "_encode_batch", lambda texts, device, model=None: encoded.append(list(texts))
                        or plain_encode(list(texts)))
    first = encode([long, TEXTS[0]], device="cpu", memo="one")
    memo = embedding.input_memo("one")
    assert memo.stats == {"texts": 2, "hits": 0} and len(encoded) == 1
    encoded.clear()
    again = encode([appended, TEXTS[0] + " More.", "Helios " + long], device="cpu", memo="one")
    assert encoded == [[TEXTS[0] + " More.", "Helios " + long]]  # the appended text was not encoded
    assert memo.stats == {"texts": 5, "hits": 1}
    np.testing.assert_allclose(again[0], first[0], atol=1e-6)
    np.testing.assert_allclose(again, plain_encode([appended, TEXTS[0] + " More.", "Helios " + long]), atol=1e-5)
    # Another memo (another embedding function, so another knowledge base or run) has its own; off, none.
    encoded.clear()
    encode([appended], device="cpu", memo="two")
    encode([appended], device="cpu")
    assert encoded == [[appended], [appended]] and embedding.input_memo("two").stats == {"texts": 1, "hits": 0}


def test_empty_input():
    assert encode([], device="cpu").shape == (0, EMBEDDING_DIM)


def test_out_of_memory_shrinks_the_batch_and_keeps_the_vectors(fresh_batchers, monkeypatch):
    expected = plain_encode(TEXTS)
    model = load_model("cpu")
    real_encode = model.encode
    calls = []

    def encode_with_small_memory(sentences, *args, **kwargs):
        calls.append(len(sentences))
        if len(sentences) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real_encode(sentences, *args, **kwargs)

    monkeypatch.setattr(model, "encode", encode_with_small_memory)
    vectors = encode(TEXTS, device="cpu", batch_size=16)
    assert vectors.shape == (len(TEXTS), EMBEDDING_DIM)
    assert np.allclose(vectors, expected, atol=1e-5)
    adaptive = embedding.batcher("cpu", 16)
    assert adaptive.stats["ooms"] == 2 and adaptive.stats["shrinks"] == 2  # 16 -> 8 -> 4
    assert calls[:2] == [11, 8]

    # The learned size persists: the next call starts at 4 and runs out of memory no more.
    ooms = adaptive.stats["ooms"]
    again = encode(TEXTS[:8], device="cpu", batch_size=16)
    assert np.allclose(again, expected[:8], atol=1e-5)
    assert adaptive.stats["ooms"] == ooms


async def test_embedding_func_for_lightrag(fresh_batchers):
    func = minilm_embedding_func(device="cpu", batch_size=8)
    assert func.embedding_dim == EMBEDDING_DIM
    vectors = await func(TEXTS[:3])
    assert np.allclose(vectors, plain_encode(TEXTS[:3]), atol=1e-5)


def test_the_embedding_worker_process_returns_the_in_process_vectors():
    import asyncio

    texts = ["A worker process encodes these.", "Same vectors as in this process, in the same order."]
    in_worker = asyncio.run(minilm_embedding_func(device="cpu")(texts))
    in_process = asyncio.run(minilm_embedding_func(device="cpu", in_process=True)(texts))
    assert in_worker.shape == (2, EMBEDDING_DIM)
    assert np.allclose(in_worker, in_process, atol=1e-5)


def _mapped_kb(path_suffix):
    """(Size, Rss) in KB of this process's mappings of files ending in ``path_suffix``."""
    size = rss = 0
    current = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                current = fields[5] if len(fields) > 5 else ""
            elif current and current.endswith(path_suffix) and fields[0] in ("Size:", "Rss:"):
                if fields[0] == "Size:":
                    size += int(fields[1])
                else:
                    rss += int(fields[1])
    return size, rss


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc/self/smaps")
def test_cpu_model_weights_are_resident_once_loaded():
    """Not paged in a token at a time while encoding: the worker's RSS must not creep with new words."""
    load_model("cpu")
    size, rss = _mapped_kb(".safetensors")
    if size == 0:
        pytest.skip("the weights are not memory-mapped from the model file here")
    assert rss >= 0.95 * size, (size, rss)
