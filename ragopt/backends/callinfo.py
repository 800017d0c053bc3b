"""A side channel from a model backend to whoever observes the call.

The profiler wraps the LLM function LightRAG calls, but only the backend knows
how long a request queued for a slot and how long it held one. Before each call
the observer sets ``current_call`` to an empty dict; a backend that knows more
(the simulator does, a remote endpoint does not) fills in the fields below.
Observers fall back to their own wall-clock measurement for missing fields.

Fields (all optional):
    kind               prompt kind, e.g. "extract", "glean", "summary", "keywords"
    queue_wait_ns      time spent waiting for a free slot
    service_ns         time the request held a slot (the backend's busy time)
    prompt_tokens      tokens in the request
    completion_tokens  tokens in the answer
    outcome            "ok", "429", "timeout", "5xx"
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
