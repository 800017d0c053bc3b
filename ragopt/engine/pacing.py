"""Pacing to a hosted endpoint's rate limits: requests and tokens per minute, each a token bucket.

Real APIs limit requests and tokens per minute rather than offering K slots.
Every LLM call takes one request and its prompt's tokens from the buckets
before it goes out (waiting while either is short), and its answer's tokens
once it is back; both refill continuously at limit / 60 per second, up to one
second's worth, so the rate over any minute stays under the limit. Pair it
with adaptive concurrency to find a working K from the endpoint's 429s.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, Optional

from ragopt.backends.tokenizer import count_tokens
from ragopt.engine.registry import BEFORE_INIT, Optimization, Target, register_optimization


class TokenBucket:
    """``per_minute`` units a minute; ``take(n)`` waits until they are there (a debt is paid by waiting)."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)  # one second's worth
        self.level = self.capacity
        self.clock, self.sleep = clock, sleep
        self.updated = clock()
        self.waited_s = 0.0
        self._lock: Optional[asyncio.Lock] = None

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def take(self, units: float) -> None:
        """Take ``units`` once the bucket holds them (or is full, for a cost above its capacity)."""
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:  # first come, first served
            self._refill()
            need = min(units, self.capacity)
            if self.level < need:
                wait = (need - self.level) / self.rate
                self.waited_s += wait
                await self.sleep(wait)
                self._refill()
            self.level -= units

    def charge(self, units: float) -> None:
        """Take ``units`` after the fact (an answer's tokens): the next takers wait for the debt."""
        self._refill()
        self.level -= units


def paced(func: Callable, requests: Optional[TokenBucket], tokens: Optional[TokenBucket]) -> Callable:
    """``func`` taking one request and its prompt's tokens before each call, its answer's tokens after."""

    async def within_rate(prompt: Any = "", *args: Any, **kwargs: Any):
        if requests is not None:
            await requests.take(1)
        if tokens is not None:
            sent = [kwargs.get("system_prompt") or "", str(prompt)] + [str(m.get("content", "")) for m in kwargs.get("history_messages") or []]
            await tokens.take(count_tokens("".join(sent)))
        answer = await func(prompt, *args, **kwargs)
        if tokens is not None and isinstance(answer, str):
            tokens.charge(count_tokens(answer))
        return answer

    return within_rate


def _install(target: Target) -> None:
    config, rag = target.config, target.rag
    requests = TokenBucket(config.llm_requests_per_minute) if config.llm_requests_per_minute else None
    tokens = TokenBucket(config.llm_tokens_per_minute) if config.llm_tokens_per_minute else None
    target.stats["buckets"] = {"requests": requests, "tokens": tokens}
    rag.llm_model_func = paced(rag.llm_model_func, requests, tokens)
    if rag.vision_model_func is not None:
        rag.vision_model_func = paced(rag.vision_model_func, requests, tokens)


def waited_s(stats: Dict[str, Any]) -> Dict[str, float]:
    """Seconds each bucket made calls wait so far."""
    return {name: bucket.waited_s for name, bucket in stats.get("buckets", {}).items() if bucket is not None}


register_optimization(Optimization(
    name="rate_limits",
    field="llm_requests_per_minute",
    summary="LLM calls paced to the endpoint's requests and tokens per minute (token buckets)",
    when=BEFORE_INIT,
    install=_install,
    counts=("buckets",),
    enabled=lambda config: bool(config.llm_requests_per_minute or config.llm_tokens_per_minute),
))
