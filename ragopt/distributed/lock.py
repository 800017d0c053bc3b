"""One writer per knowledge base: a Redis lock with a lease and a fencing token.

``acquire`` sets ``ragopt:kb:<kb>:writer`` to ``<token>|<holder>`` only if it is
free, with a lease of RAGOPT_WRITER_LEASE seconds; the token comes from a
counter that only grows (``ragopt:kb:<kb>:fence``), so every tenure of the
knowledge base has its own. ``keep`` renews the lease every third of its
length from a thread of its own until ``release``. ``renew`` extends it only
while the value is still ours; it is also the check a writer makes before every write
(``ragopt.distributed.fence``), so after a Redis restart or any lost
connection the writer confirms it still holds the lease before it writes
again. A dead writer stops renewing and its lease expires; the next writer
takes over with a higher token. Redis is tried again until the lease would
have run out; past that the writer has lost it (``LeaseLost``).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable, Optional

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. '|' .. ARGV[1], 'PX', ARGV[2])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('TIME')
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(RuntimeError):
    """This writer no longer holds its knowledge base (its lease expired or another writer took over)."""


def lock_key(kb: str) -> str:
    return f"ragopt:kb:{kb}:writer"


def holder_of(client, kb: str) -> Optional[str]:
    """The holder part of the current lock value, or None when the knowledge base is free."""
    value = client.get(lock_key(kb))
    return None if value is None else value.decode().split("|", 1)[1]


class WriterLock:
    """The writer lock of knowledge base ``kb`` for ``holder`` (``<celery node>|<pid>|<nonce>``)."""

    def __init__(self, client, kb: str, holder: str, lease_s: float):
        self.client, self.kb, self.holder, self.lease_ms = client, kb, holder, int(lease_s * 1000)
        self.key, self.fence_key = lock_key(kb), f"ragopt:kb:{kb}:fence"
        self.token: Optional[int] = None
        self.checks = 0  # successful renewals/confirmations
        self.confirmed_at: Optional[float] = None  # Redis's clock at the last one
        self.reconnects = 0  # times Redis could not be reached and was tried again
        self._valid_until = 0.0  # monotonic: past this, an unconfirmed lease may have expired
        self._stop_keeping = threading.Event()  # set by release: the keeper's thread ends
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def value(self) -> str:
        return f"{self.token}|{self.holder}"

    def acquire(self) -> Optional[int]:
        """The new fencing token, or None if another writer holds the knowledge base."""
        started = time.monotonic()
        token = self._call(lambda: self._acquire(keys=[self.key, self.fence_key], args=[self.holder, self.lease_ms]),
                           deadline=started + self.lease_ms / 1000)
        if token is None:
            return None
        self.token, self._valid_until = int(token), started + self.lease_ms / 1000
        return self.token

    def renew(self) -> None:
        """Extend the lease; ``LeaseLost`` if it is no longer ours or Redis stayed out of reach past it."""
        started = time.monotonic()
        now = self._call(lambda: self._renew(keys=[self.key], args=[self.value, self.lease_ms]), self._valid_until)
        if now is None:
            raise LeaseLost(f"knowledge base {self.kb!r}: the writer lease with token {self.token} is gone "
                            f"(now held by {holder_of(self.client, self.kb) or 'nobody'})")
        self.checks += 1
        self.confirmed_at = int(now[0]) + int(now[1]) / 1e6
        self._valid_until = started + self.lease_ms / 1000

    def keep(self, on_lost: Callable[[LeaseLost], None]) -> None:
        """Renew the lease every third of its length until ``release``; ``on_lost(error)`` once it is lost.

        A thread, not a task of the writer's event loop: that loop can be busy
        for longer than the lease (a process's first RAGAnything takes 3-5 s to
        build, mostly imports), and a live writer must not lose its knowledge
        base to its own busy loop. A dead process renews nothing; one stuck for
        good keeps its knowledge base until it is stopped.
        """
        stopped = self._stop_keeping = threading.Event()

        def renew_until_released() -> None:
            while not stopped.wait(self.lease_ms / 3000):
                try:
                    self.renew()
                except LeaseLost as lost:
                    if not stopped.is_set():
                        on_lost(lost)
                    return

        threading.Thread(target=renew_until_released, name=f"ragopt-lease-{self.kb}", daemon=True).start()

    def release(self) -> None:
        """Stop keeping the lease, and free the knowledge base if we still hold it (never someone else's lease)."""
        self._stop_keeping.set()
        if self.token is not None:
            try:
                self._call(lambda: self._release(keys=[self.key], args=[self.value]), self._valid_until)
            except LeaseLost:
                pass  # out of reach: the lease expires by itself
            self.token = None

    def _call(self, command, deadline: float):
        """Run ``command``, trying Redis again with jittered backoff until ``deadline`` (monotonic)."""
        from redis.exceptions import ConnectionError, TimeoutError

        pause = 0.05
        while True:
            try:
                return command()
            except (ConnectionError, TimeoutError, OSError) as error:
                self.reconnects += 1
                if time.monotonic() + pause > deadline:
                    raise LeaseLost(f"knowledge base {self.kb!r}: Redis out of reach until the writer lease "
                                    f"would have expired ({error})") from None
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 1.0)
