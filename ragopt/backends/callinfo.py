"""A side channel from a model backend to whoever observes the call.

The profiler wraps the LLM function LightRAG calls, but only the backend knows
how long a request queued for a slot, how long it held one and how long it
was planned to. Before each call the observer sets ``current_call`` to an
empty dict; the backend fills in what it knows, explicitly, in the caller's
own context once the answer is back (the simulator serves on a thread of
its own, so nothing it does there could reach a context variable of the
caller). Observers fall back to their own measurement for missing fields.

Fields (all optional):
    kind               prompt kind, e.g. "extract", "glean", "summary", "keywords"
    queue_wait_ns      time spent waiting for a free slot
    service_ns         time the request held a slot (the backend's measured busy time)
    planned_ns         the service time the engine planned (the simulator; none from a real endpoint)
    answer_wait_ns     how long the answer waited for the caller after the slot was released
    granted_at         when the slot was granted and released: time.perf_counter() readings
    released_at        (the in-process simulator on the wall clock reports them)
    prompt_tokens      tokens in the request
    completion_tokens  tokens in the answer
    token_source       where the token counts come from: "simulator", "usage" (the endpoint's), "tokenizer"
    outcome            "ok", "429", "timeout", "5xx", "cancelled"
"""

from __future__ import annotations

import contextvars
from typing import Any, Dict, Optional

current_call: contextvars.ContextVar[Optional[Dict[str, Any]]] = contextvars.ContextVar(
    "ragopt_current_call", default=None
)


def report(**fields: Any) -> None:
    """Record fields about the call in progress, if anyone is observing it."""
    info = current_call.get()
    if info is not None:
        info.update(fields)
