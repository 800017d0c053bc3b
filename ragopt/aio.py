"""Run ragopt's async core from synchronous code: scripts, notebooks, %timeit.

Outside a running loop every call reuses one private event loop, so objects
that bind to a loop on first use (LightRAG's locks, queues) stay valid from one
call to the next. Inside Jupyter, where the kernel's loop is already running,
nest-asyncio lets the call run to completion on that loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

_local = threading.local()


def _private_loop() -> asyncio.AbstractEventLoop:
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def run_sync(awaitable: Awaitable[T]) -> T:
    """Wait for ``awaitable`` from synchronous code, in or out of a running loop."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None:
        loop = _private_loop()
        task = asyncio.ensure_future(awaitable, loop=loop)
        try:
            return loop.run_until_complete(task)
        except KeyboardInterrupt:
            # Ctrl-C: let the work cancel cleanly (flush what is done) before re-raising.
            task.cancel()
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
            raise
    import nest_asyncio

    nest_asyncio.apply(running)
    return running.run_until_complete(awaitable)



def blocking(async_func: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """The blocking form of ``async_func`` with its signature and docstring (Shift-Tab in Jupyter shows both)."""

    @functools.wraps(async_func)
    def blocking_form(*args: Any, **kwargs: Any) -> T:
        return run_sync(async_func(*args, **kwargs))

    blocking_form.__doc__ = f"Blocking form of ``{async_func.__name__}`` (scripts, Jupyter, ``%timeit``).\n\n{async_func.__doc__ or ''}"
    return blocking_form
