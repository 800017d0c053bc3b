"""A workaround for kombu 5.7's Redis transport when Redis goes away while a task runs.

On a lost broker connection Celery collects the connection (which drops its
settings: ``transport.client = None``) and then closes it; closing the channel
restores its unacknowledged messages, and acknowledging a running task's
message later goes through the same channel: both build a Redis client from
the dropped settings and raise ``AttributeError``, which kombu does not catch,
so the worker stops with "Unrecoverable error" instead of reconnecting. Raised
as a connection error, kombu treats it as the lost connection it is: the
worker reconnects, and Redis delivers those messages again after the visibility
timeout (every ragopt task is idempotent).
"""

from __future__ import annotations


def apply() -> None:
    """Install the fix in this process (a worker's), once."""
    from kombu.transport import redis as transport
    from redis.exceptions import ConnectionError

    original = transport.Channel._connparams
    if getattr(original, "ragopt_fixed", False):
        return

    def connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise ConnectionError("the broker connection was closed after it was lost")
        return original(self, asynchronous=asynchronous)

    connparams.ragopt_fixed = True
    transport.Channel._connparams = connparams
