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
- its own thread, event loop and clock (``_Server``): a slot is released at
  its planned end even while the caller's loop is blocked, as on a real
  engine, so the plan, and with it the LLM-bound lower limit of a run
  (planned service seconds / slots), does not depend on the caller;
- counters and a per-call record that crosses back to the caller with the
  answer (``callinfo``), for the profiler.

Answers come from sim_answers.py. ``llm_func(sim)`` and ``vision_func(sim)`` give
plain async functions with LightRAG's / RAG-Anything's model-function signature.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import heapq
import json
import threading
import time
import weakref
import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import httpx
import openai
import pandas as pd

from ragopt.backends import callinfo, sim_answers
from ragopt.backends.tokenizer import count_tokens

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
    max_queue: Optional[int] = None
    """Admission control: with all K slots busy and this many requests already waiting, a new one gets
    a 429 (as a hosted API answers overload). None: every request queues."""

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
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue!r}")

    @classmethod
    def preset(cls, name: str = "default", **overrides: Any) -> "SimulatorConfig":
        """A named engine profile ("default", "hosted", "vllm", "fast"), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown simulator preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def latency_s(self, completion_tokens: int, u: float) -> float:
        """Service time of a successful request; u in [-1, 1) scales the jitter."""
        return (self.ttft_s + completion_tokens * self.tpot_s) * (1 + self.jitter * u)


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


class RealClock:
    """The server's wall clock: perf_counter seconds; sleeping is the server loop's own."""

    def now(self) -> float:
        return time.perf_counter()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        pass


class ManualClock:
    """A clock that moves only when told to (``advance``), for tests of the slot schedule.

    Sleepers wake in deadline order, each at its own deadline, and the server
    loop runs whatever they start (a released slot granted to the next
    request) before the clock moves on, so a schedule is exact.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._sleepers: List[Tuple[float, int, asyncio.Future]] = []
        self._seq = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def now(self) -> float:
        return self._now

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (deadline, self._seq, waiter))
        await waiter

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, from any thread; returns once the server has caught up."""
        asyncio.run_coroutine_threadsafe(self._advance_to(self._now + seconds), self._loop).result()

    async def _settle(self) -> None:
        for _ in range(20):  # a wake-up, the slot it frees, the request that takes it: a few loop turns
            await asyncio.sleep(0)

    async def _advance_to(self, target: float) -> None:
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, waiter = heapq.heappop(self._sleepers)
            self._now = deadline
            if not waiter.done():
                waiter.set_result(None)
            await self._settle()
        self._now = target
        await self._settle()


class _Server:
    """The engine's own thread and event loop: slots are granted and released on its clock.

    A real serving engine frees a slot when generation ends, whether or not
    the client has read the answer yet; here too, however long the caller's
    event loop is blocked (merges, flushes), a request holds its slot for its
    planned time only. Slots are granted first come first served.
    """

    def __init__(self, slots: int, clock: Any) -> None:
        self.clock = clock
        self.free = slots
        self.waiters: Deque[asyncio.Future] = collections.deque()
        self.loop = asyncio.new_event_loop()
        clock.bind(self.loop)
        self.thread = threading.Thread(target=self.loop.run_forever, name="ragopt-llm-sim-server", daemon=True)
        self.thread.start()

    async def acquire(self) -> None:
        if self.free and not self.waiters:
            self.free -= 1
            return
        waiter = self.loop.create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just before the cancel landed: pass the slot on
            else:
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)


@dataclass
class _Call:
    """One request as the engine saw it; times are seconds on the engine's clock."""

    arrived: float
    started: Optional[float]
    ended: Optional[float]
    kind: str
    outcome: str
    planned_s: float
    """The service time the engine planned (for a cancelled request: the time it held its slot)."""
    prompt_tokens: int
    completion_tokens: int

    def report(self, now: float, clock: Any) -> None:
        """Hand the caller's observer (``callinfo``) this call's numbers, in the caller's own context.

        ``now`` is when the caller got the answer (engine clock): it may be
        later than the slot's release if the caller's loop was busy.
        """
        on_perf_counter = isinstance(clock, RealClock)  # the caller's own clock: its times are comparable
        callinfo.report(
            kind=self.kind,
            granted_at=self.started if on_perf_counter else None,
            released_at=self.ended if on_perf_counter else None,
            answer_wait_ns=round(max(0.0, now - self.ended) * 1e9),
            queue_wait_ns=round((self.started - self.arrived) * 1e9),
            service_ns=round((self.ended - self.started) * 1e9),
            planned_ns=round(self.planned_s * 1e9),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            token_source="simulator",
            outcome=self.outcome,
        )


class LLMSimulator:
    """The simulated engine: answers, latency, slots, faults and counters.

    ``clock`` is the engine's clock (default: the wall clock; ``ManualClock``
    for tests). The engine runs on a thread of its own; callers on any event
    loop or thread share its K slots.
    """

    def __init__(self, config: Optional[SimulatorConfig] = None, clock: Any = None) -> None:
        self.config = config or SimulatorConfig()
        self.clock = clock or RealClock()
        self._server = _Server(self.config.slots, self.clock)
        weakref.finalize(self, self._server.stop)
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
        completion_tokens = count_tokens(answer) if outcome == "ok" else 0
        planned = {
            "ok": config.latency_s(completion_tokens, 2 * _unit(config.seed, key, "latency") - 1),
            "timeout": config.timeout_s,  # the request hangs, holding its slot
            "5xx": config.ttft_s,  # the engine took the request, then failed
            "429": 0.0,  # refused at the door: no slot held
        }[outcome]
        call = _Call(self.clock.now(), None, None, kind, outcome, planned, prompt_tokens, completion_tokens)
        served = asyncio.run_coroutine_threadsafe(self._serve(call), self._server.loop)
        try:
            # The call's record crosses back with the answer and is reported here, in the caller's context.
            await asyncio.wrap_future(served)  # a cancelled caller cancels the request, freeing its slot
        except asyncio.CancelledError:
            self._as_seen_at_cancel(call).report(self.clock.now(), self.clock)
            raise
        call.report(self.clock.now(), self.clock)
        if call.outcome == "429":
            raise _rate_limit_error(config.retry_after_s)
        if call.outcome == "timeout":
            raise _timeout_error()
        if call.outcome == "5xx":
            raise _server_error()
        return answer

    async def _serve(self, call: _Call) -> None:
        """On the engine's loop: queue for a slot, hold it for the planned time, release it.

        Fills in ``call`` (read by the caller once this returns).
        """
        clock, server = self.clock, self._server
        limit = self.config.max_queue
        overloaded = limit is not None and not server.free and len(server.waiters) >= limit
        if call.outcome == "429" or overloaded:
            call.outcome, call.planned_s, call.completion_tokens = "429", 0.0, 0
            call.started = call.ended = call.arrived
            self._record(call)
            return
        try:
            await server.acquire()
        except asyncio.CancelledError:
            self._record(self._as_seen_at_cancel(call))
            raise
        call.started = clock.now()
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            await clock.sleep_until(call.started + call.planned_s)
            call.ended = clock.now()
            self._record(call)
        except asyncio.CancelledError:
            self._record(self._as_seen_at_cancel(call))
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
            server.release()

    def _as_seen_at_cancel(self, call: _Call) -> _Call:
        """The record of a request its caller gave up on: planned = the time it held a slot so far.

        A hung request stays a timeout; any other becomes "cancelled".
        """
        now = self.clock.now()
        started = now if call.started is None else call.started
        return dataclasses.replace(
            call, started=started, ended=now, planned_s=now - started,
            outcome="timeout" if call.outcome == "timeout" else "cancelled",
            completion_tokens=0,
        )

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

    # ------------------------------------------------------------- counters

    def reset(self) -> None:
        """Forget all calls and how often each request was sent (faults replay from the start).

        Requests still in flight are recorded when they finish, in the new window.
        """
        with self._lock:
            self._calls: List[_Call] = []
            self._times_sent: Dict[str, int] = {}
            self._max_in_flight = self._in_flight

    @property
    def in_flight(self) -> int:
        """Requests holding a slot now."""
        with self._lock:
            return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now (read from any thread: copying the deque is atomic under the GIL)."""
        return sum(1 for waiter in list(self._server.waiters) if not waiter.done())

    def counters(self) -> Dict[str, Any]:
        """Totals since the last reset().

        ``lower_limit_s`` is the engine's plan: the sum of planned service
        seconds over K, which no caller can stretch. ``busy_s`` (the slots'
        measured hold time) stays beside it.
        """
        with self._lock:
            calls = list(self._calls)
            max_in_flight = self._max_in_flight
        busy_ns = sum(round((c.ended - c.started) * 1e9) for c in calls)
        planned_ns = sum(round(c.planned_s * 1e9) for c in calls)
        return {
            "slots": self.config.slots,
            "calls": len(calls),
            "calls_by_kind": dict(collections.Counter(c.kind for c in calls)),
            "calls_by_outcome": dict(collections.Counter(c.outcome for c in calls)),
            "busy_ns": busy_ns,
            "busy_s": busy_ns / 1e9,
            "planned_ns": planned_ns,
            "planned_s": planned_ns / 1e9,
            "queue_wait_s": sum(c.started - c.arrived for c in calls),
            "max_in_flight": max_in_flight,
            "prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls),
            "lower_limit_s": planned_ns / 1e9 / self.config.slots,
            "measured_lower_limit_s": busy_ns / 1e9 / self.config.slots,
        }

    def lower_limit_s(self) -> float:
        """The LLM-bound lower limit of the run so far: planned service seconds / slots."""
        return self.counters()["lower_limit_s"]

    def calls_frame(self) -> pd.DataFrame:
        """One row per call, in seconds on the engine's clock: ``start`` (arrival), ``granted``
        (a slot given), ``end`` (the slot released; the caller may read the answer later).
        outcome is "ok", "429", "timeout", "5xx", or "cancelled" (the caller gave up in service).
        """
        with self._lock:
            calls = list(self._calls)
        return pd.DataFrame(
            [
                {
                    "start": c.arrived,
                    "granted": c.started,
                    "end": c.ended,
                    "kind": c.kind,
                    "outcome": c.outcome,
                    "queue_wait_s": c.started - c.arrived,
                    "service_s": c.ended - c.started,
                    "planned_s": c.planned_s,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                }
                for c in calls
            ],
            columns=["start", "granted", "end", "kind", "outcome", "queue_wait_s", "service_s",
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
