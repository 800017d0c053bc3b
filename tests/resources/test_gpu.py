from collections import Counter

import numpy as np
import pytest
import torch

from ragopt.resources.gpu import (
    AdaptiveBatcher,
    DeviceUnavailableError,
    batch_size_for,
    choose_device,
    free_memory_bytes,
    initial_batch_size,
    is_oom_error,
    track_peak_memory,
)

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="asserts the CPU-only behaviour")


@needs_no_cuda
def test_choose_device_on_a_cpu_machine():
    assert choose_device() in ("cpu", "mps")
    assert choose_device("cpu") == "cpu"
    assert choose_device("cuda") == "cpu"
    with pytest.raises(DeviceUnavailableError, match="cuda was required"):
        choose_device("cuda", fallback_to_cpu=False)
    with pytest.raises(ValueError):
        choose_device("tpu")


@needs_no_cuda
def test_memory_queries_are_none_off_cuda():
    assert free_memory_bytes("cpu") is None
    with track_peak_memory("cpu") as peak:
        torch.ones(1000)
    assert peak.peak_bytes is None
    assert batch_size_for("cpu", bytes_per_item=10_000, cpu_batch_size=16) == 16


def test_initial_batch_size_from_free_memory():
    assert initial_batch_size(free_bytes=1000, bytes_per_item=10) == 50
    assert initial_batch_size(free_bytes=1000, bytes_per_item=10, safety=1.0, max_size=64) == 64
    assert initial_batch_size(free_bytes=5, bytes_per_item=10) == 1
    with pytest.raises(ValueError):
        initial_batch_size(1000, 0)


def test_is_oom_error():
    assert is_oom_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_oom_error(RuntimeError("MPS backend out of memory"))
    assert not is_oom_error(RuntimeError("shape mismatch"))
    assert not is_oom_error(MemoryError())


class FakeModel:
    """Embeds ints; runs out of memory on the 'GPU' above a batch-size limit."""

    def __init__(self, gpu_limit):
        self.gpu_limit = gpu_limit
        self.calls = Counter()  # item -> times it was passed to the model
        self.embedded = Counter()  # item -> times it was embedded successfully
        self.attempts = []  # (device, batch size) of every call

    def __call__(self, batch, device):
        self.attempts.append((device, len(batch)))
        self.calls.update(batch)
        if device != "cpu" and len(batch) > self.gpu_limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {len(batch)}")
        self.embedded.update(batch)
        return np.array([[x, x * 2.0] for x in batch])


def test_adaptive_batcher_halves_on_oom_and_grows_back():
    items = list(range(300))
    model = FakeModel(gpu_limit=8)
    batcher = AdaptiveBatcher(model, device="cuda", start_size=32, grow_after=3)
    result = batcher.run(items)

    expected = AdaptiveBatcher(FakeModel(gpu_limit=10**9), device="cuda", start_size=32).run(items)
    np.testing.assert_array_equal(result, expected)
    assert result[:, 0].tolist() == items  # order kept, nothing lost or duplicated

    sizes = batcher.stats["batch_sizes"]
    assert sum(sizes) == len(items) and max(sizes) == 8
    assert model.attempts[:3] == [("cuda", 32), ("cuda", 16), ("cuda", 8)]
    assert batcher.stats["shrinks"] >= 2
    assert batcher.stats["grows"] >= 1  # it retried 16 after 3 successes at 8
    assert ("cuda", 16) in model.attempts[3:]
    assert batcher.stats["ooms"] == batcher.stats["shrinks"]
    assert batcher.stats["fallbacks"] == 0
    assert model.calls[0] == 3  # retried: in the failed 32 and 16 batches, then embedded at 8
    assert set(model.embedded) == set(items) and set(model.embedded.values()) == {1}


def test_adaptive_batcher_keeps_list_outputs_in_order_and_carries_size_over():
    def upper(batch, device):
        if len(batch) > 4:
            raise RuntimeError("CUDA error: out of memory")
        return [s.upper() for s in batch]

    batcher = AdaptiveBatcher(upper, device="cuda", start_size=16, grow_after=100)
    words = [f"w{i}" for i in range(37)]
    assert batcher.run(words) == [w.upper() for w in words]
    assert batcher.batch_size == 4
    ooms = batcher.stats["ooms"]
    assert batcher.run(words[:8]) == ["W0", "W1", "W2", "W3", "W4", "W5", "W6", "W7"]
    assert batcher.stats["ooms"] == ooms  # learned size reused, no new OOM


def test_adaptive_batcher_falls_back_to_cpu_when_one_item_does_not_fit():
    model = FakeModel(gpu_limit=0)
    batcher = AdaptiveBatcher(model, device="cuda", start_size=4, cpu_batch_size=5)
    result = batcher.run(list(range(12)))
    assert result[:, 0].tolist() == list(range(12))
    assert batcher.stats["fallbacks"] == 1
    assert [a for a in model.attempts if a[0] == "cuda"] == [("cuda", 4), ("cuda", 2), ("cuda", 1)]
    assert [a for a in model.attempts if a[0] == "cpu"] == [("cpu", 5), ("cpu", 5), ("cpu", 2)]


def test_adaptive_batcher_reraises_what_it_cannot_fix():
    with pytest.raises(torch.OutOfMemoryError):
        AdaptiveBatcher(FakeModel(gpu_limit=0), device="cuda", start_size=4, cpu_fallback=False).run([1, 2])

    calls = []

    def broken(batch, device):
        calls.append(len(batch))
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError):
        AdaptiveBatcher(broken, device="cuda", start_size=4).run([1, 2, 3])
    assert calls == [3]  # no retry for other errors

    with pytest.raises(ValueError, match="2 outputs for a batch of 3"):
        AdaptiveBatcher(lambda batch, device: batch[:2], start_size=4).run([1, 2, 3])


def test_adaptive_batcher_concatenates_tensor_outputs():
    def embed(batch, device):
        return torch.tensor(batch, dtype=torch.float32).unsqueeze(1)

    out = AdaptiveBatcher(embed, start_size=3).run(range(7))
    assert isinstance(out, torch.Tensor) and out.squeeze(1).tolist() == list(range(7))
    assert AdaptiveBatcher(embed).run([]) == []
