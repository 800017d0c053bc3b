"""Retries of transient LLM errors, and optional adaptive concurrency.

A serving engine under load answers 429 (with Retry-After), times out, or
returns a 5xx; LightRAG marks the whole document failed on the first such
error. ``retrying`` wraps the LLM function so these are retried with
exponential backoff and jitter, honouring Retry-After. ``limited`` puts an
``AdaptiveLimit`` under them: the number of requests in flight halves on a
429 and grows back by one after a run of successes (AIMD, as TCP does).

Both wrappers are plain ``async def`` closures: LightRAG deep-copies its
settings, and a callable object holding a lock breaks its start-up.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import openai

from ragopt.engine.registry import BEFORE_INIT, Optimization, Target, register_optimization

TRANSIENT_ERRORS = (
    openai.RateLimitError,
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.InternalServerError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.5
    """Each delay is scaled by a random factor in [1 - jitter, 1 + jitter]."""

    def delay_s(self, attempt: int, error: BaseException, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1``; Retry-After wins when given."""
        retry_after = _retry_after_s(error)
        if retry_after is not None:
            return retry_after
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return backoff * (1 + self.jitter * (2 * rng.random() - 1))


def _retry_after_s(error: BaseException) -> Optional[float]:
    response = getattr(error, "response", None)
    value = None if response is None else response.headers.get("retry-after")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None


class AdaptiveLimit:
    """An AIMD cap on requests in flight: halve on 429, +1 after ``grow_after`` successes."""

    def __init__(self, maximum: int, minimum: int = 1, grow_after: int = 20):
        self.maximum, self.minimum, self.grow_after = maximum, minimum, grow_after
        self.limit = maximum
        self.in_flight = 0
        self._successes = 0
        self._waiters: list = []
        self.history: list = [(0.0, maximum)]

    async def acquire(self) -> None:
        while self.in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # it was woken, then cancelled: pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_flight += 1

    def release(self, outcome: str) -> None:
        """``outcome``: "ok", "rate_limited" (halves the limit) or "error" (neither)."""
        self.in_flight -= 1
        if outcome == "rate_limited":
            self._successes = 0
            self._set(max(self.minimum, self.limit // 2))
        elif outcome == "ok":
            self._successes += 1
            if self._successes >= self.grow_after and self.limit < self.maximum:
                self._successes = 0
                self._set(self.limit + 1)
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_flight
        for waiter in [w for w in self._waiters if not w.done()][: max(0, free)]:
            waiter.set_result(None)

    def _set(self, limit: int) -> None:
        if limit != self.limit:
            self.limit = limit
            self.history.append((asyncio.get_running_loop().time(), limit))


def limited(func: Callable, limit: AdaptiveLimit) -> Callable:
    """``func`` holding one of ``limit``'s places per call; a 429 halves the limit."""

    async def within_limit(*args: Any, **kwargs: Any):
        await limit.acquire()
        outcome = "error"
        try:
            result = await func(*args, **kwargs)
            outcome = "ok"
            return result
        except openai.RateLimitError:
            outcome = "rate_limited"
            raise
        finally:
            limit.release(outcome)

    return within_limit


def retrying(
    func: Callable,
    policy: RetryPolicy = RetryPolicy(),
    stats: Optional[Dict[str, int]] = None,
    seed: int = 0,
) -> Callable:
    """``func`` with transient errors retried; counts go to ``stats`` (retries, gave_up, by error)."""
    stats = {} if stats is None else stats
    rng = random.Random(seed)

    async def retried(*args: Any, **kwargs: Any):
        attempt = 1
        while True:
            try:
                return await func(*args, **kwargs)
            except TRANSIENT_ERRORS as error:
                name = type(error).__name__
                stats[name] = stats.get(name, 0) + 1
                if attempt >= policy.max_attempts:
                    stats["gave_up"] = stats.get("gave_up", 0) + 1
                    raise
                delay = policy.delay_s(attempt, error, rng)
            stats["retries"] = stats.get("retries", 0) + 1
            attempt += 1
            await asyncio.sleep(delay)

    return retried


def _install_limit(target: Target) -> None:
    rag = target.rag
    limit = AdaptiveLimit(target.slots)
    target.stats["limit_history"] = limit.history
    rag.llm_model_func = limited(rag.llm_model_func, limit)
    if rag.vision_model_func is not None:
        rag.vision_model_func = limited(rag.vision_model_func, limit)


def _install_retries(target: Target) -> None:
    rag, seed = target.rag, target.config.sim_seed
    rag.llm_model_func = retrying(rag.llm_model_func, stats=target.stats, seed=seed)
    if rag.vision_model_func is not None:
        rag.vision_model_func = retrying(rag.vision_model_func, stats=target.stats, seed=seed + 1)


register_optimization(Optimization(
    name="adaptive_concurrency",
    field="adaptive_concurrency",
    summary="LLM requests in flight halve on a 429 and grow back by one after 20 successes (AIMD)",
    when=BEFORE_INIT,
    install=_install_limit,
    counts=("limit_history",),
))
register_optimization(Optimization(
    name="llm_retries",
    field="llm_retries",
    summary="429s, timeouts and 5xx retried with exponential backoff and jitter, honouring Retry-After",
    when=BEFORE_INIT,
    install=_install_retries,
    counts=("retries", "gave_up"),
))
