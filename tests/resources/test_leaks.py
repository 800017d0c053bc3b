"""LeakCheck and soak find growth, and report none without it."""

import mmap
import pytest
import tracemalloc
from ragopt.resources.rss import MB
from ragopt.resources.leaks import LeakCheck, soak


def touched_bytes(n):
    # bytearray(n) may be backed by untouched zero pages that never count in RSS.
    return bytearray(b"\x01") * n


def touched_map(n):
    pages = mmap.mmap(-1, n)
    pages.write(b"\x01" * n)
    return pages


_LEAKED = []


def _leak_100kb():
    _LEAKED.append(bytearray(100_000))


def test_leak_check_points_at_the_leaking_line():
    was_tracing = tracemalloc.is_tracing()
    with LeakCheck() as leaks:
        for _ in range(20):
            _leak_100kb()
        leaks.checkpoint("mid")
        for _ in range(30):
            _leak_100kb()
    _LEAKED.clear()
    assert tracemalloc.is_tracing() == was_tracing

    leak_line = f"{__file__}:{_leak_100kb.__code__.co_firstlineno + 1}"
    top = leaks.top_growth(5)
    assert top.iloc[0]["location"] == leak_line
    assert 4800 <= top.iloc[0]["size_diff_kb"] <= 5000
    assert top.iloc[0]["count_diff"] >= 50
    second_half = leaks.top_growth(5, first="mid", last="end")
    assert second_half.iloc[0]["location"] == leak_line
    assert 2900 <= second_half.iloc[0]["size_diff_kb"] <= 3000


@pytest.mark.slow
def test_soak_slope_is_flat_without_leak_and_positive_with_one():
    steady = soak(lambda: touched_bytes(1 * MB), iterations=40, warmup=5)
    assert abs(steady.slope_mb_per_iteration) < 0.1
    assert len(steady.frame) == 40 and steady.frame["warmup"].sum() == 5

    retained = []
    # Fresh pages each time (an anonymous map): a heap would first hand back memory freed earlier in this process.
    leaking = soak(lambda: retained.append(touched_map(1 * MB)), iterations=40, warmup=5, sample_every=2)
    retained.clear()
    assert 0.8 < leaking.slope_mb_per_iteration < 1.3
    assert 80 < leaking.mb_per(100) < 130
    assert len(leaking.frame) == 21  # every 2nd iteration plus the last
