"""Worker processes that exit when the process that started them dies, however it dies.

A ``ProcessPoolExecutor`` worker waits on its call queue forever: when its
parent is killed (``kill -9``, the OOM killer, a notebook kernel restarted)
nothing tells it, and it lives on under init, holding its memory (an idle
embedding worker ~640 MB). ``lifeline()`` gives a pool an initializer that,
in each worker, before the pool's own initializer:

- starts a daemon thread that waits on the parent's sentinel (the pipe end
  multiprocessing leaves open in the parent: it reads EOF the moment the
  parent is gone) and polls ``os.getppid()`` as a second opinion, then ends
  the worker with ``os._exit``: within ``POLL_S`` whether the worker is idle or
  busy, on any OS;
- on Linux, when the worker was spawned from the parent's main thread, also
  asks the kernel for SIGKILL at the parent's death (``PR_SET_PDEATHSIG``),
  which needs no Python thread to get the GIL (a worker stuck in C code).
  Not for a worker spawned from another thread: the kernel sends that signal
  when the *thread* that forked the worker exits (prctl(2)), and ragopt's
  pools outlive the thread that first used them.

Stands alone (no RAG-Anything import), so a worker starts light.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional, Sequence

POLL_S = 0.5
EXIT_CODE = 70  # what a worker whose parent died exits with (EX_SOFTWARE), for anyone reading ps or logs
_PR_SET_PDEATHSIG = 1


class _SpawnedFromMainThread:
    """Pickles as whether the pickling thread is the main thread.

    A spawned worker's arguments are pickled by the thread that starts it, at
    that moment, so the worker learns which thread created it.
    """

    def __reduce__(self):
        return bool, (threading.current_thread() is threading.main_thread(),)


def _parent_death_signal(parent_pid: int) -> None:
    """SIGKILL from the kernel when the parent dies (Linux); the parent may already be gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # it died before the request took effect
        os._exit(EXIT_CODE)


def _watch(parent_pid: int, sentinel: Optional[int]) -> None:
    from multiprocessing.connection import wait

    while True:
        if sentinel is None:
            time.sleep(POLL_S)
            parent_gone = False
        else:
            parent_gone = bool(wait([sentinel], timeout=POLL_S))
        if parent_gone or os.getppid() != parent_pid:
            os._exit(EXIT_CODE)


def exit_with_parent(spawned_from_main_thread: bool = False) -> None:
    """Make this process exit when its parent dies; call it first thing in a worker.

    The parent is the multiprocessing parent when there is one, else the
    process's parent now. ``spawned_from_main_thread`` allows the kernel's
    parent-death signal too (see the module docstring); ``lifeline`` sets it.
    """
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    if spawned_from_main_thread and sys.platform.startswith("linux"):
        _parent_death_signal(parent_pid)
    sentinel = parent.sentinel if parent is not None else None
    threading.Thread(target=_watch, args=(parent_pid, sentinel), name="ragopt-lifeline", daemon=True).start()


def _start_worker(spawned_from_main_thread: bool, initializer: Optional[Callable[..., Any]],
                  initargs: Sequence[Any]) -> None:
    exit_with_parent(spawned_from_main_thread)
    if initializer is not None:
        initializer(*initargs)


def lifeline(initializer: Optional[Callable[..., Any]] = None, initargs: Sequence[Any] = ()) -> Dict[str, Any]:
    """``initializer``/``initargs`` keyword arguments for a ``ProcessPoolExecutor`` (or
    ``multiprocessing.Pool``) whose workers exit when this process dies, then run
    ``initializer(*initargs)`` as the pool would have.
    """
    return {"initializer": _start_worker, "initargs": (_SpawnedFromMainThread(), initializer, tuple(initargs))}
