"""The tests' cluster: real ``ragopt worker`` processes on the test's own redis-server, and a client app.

Built on ``ragopt.distributed.local``; here the environment is cleaned of
the caller's ragopt settings, and the tests' helper modules (a parser whose
parses wait for a gate the test opens) reach the workers through PYTHONPATH.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ragopt.distributed.local import LocalCluster, wait_for

HERE = Path(__file__).resolve().parent
poll = wait_for  # the test's timeout is the only bound


class Cluster(LocalCluster):
    """Workers for one test on ``redis_server``; ``settings`` override the environment of both sides."""

    def __init__(self, redis_server, folder: Path, **settings: str):
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("RAGOPT_", "CELERY_", "REDIS_"))}
        defaults = dict(
            RAGOPT_SIM_PRESET="fast", RAGOPT_KB_ROOT=str(folder / "kb"), ENABLE_PARSE_CACHE="false",
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAGOPT_WRITER_LEASE="6", RAGOPT_TRANSFER_MAX_MB="1",
            PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            GATED_PARSER_GATE=str(folder / "gate-open"),
        )
        super().__init__(redis_url=redis_server.url, folder=folder, environ=environ, **{**defaults, **settings})

    def open_gate(self) -> None:
        """Let every parse of a ``gated*`` file go on (``gated_parser``)."""
        Path(self.env["GATED_PARSER_GATE"]).touch()

    def close(self) -> None:
        self.open_gate()
        super().close()


class TaskEvents:
    """Celery's task events, received in a thread while a test runs (what Flower shows)."""

    def __init__(self, app):
        self.events, self._ready = [], threading.Event()
        self._connection = app.connection()
        self._receiver = app.events.Receiver(self._connection, handlers={"*": self.events.append})
        self._receiver.on_consume_ready = lambda *args, **kwargs: self._ready.set()  # subscribed from here on
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()
        while not self._ready.wait(0.1):
            if not self._thread.is_alive():
                raise RuntimeError("the event receiver stopped before it was subscribed")

    def _receive(self) -> None:
        for _ in self._receiver.itercapture(limit=None, timeout=None, wakeup=False):
            pass

    def of_task(self, task_id: str) -> list:
        return [e["type"] for e in self.events if e.get("uuid") == task_id]

    def task_ids(self, name: str, mentioning: str) -> list:
        """Ids of tasks ``name`` whose arguments mention ``mentioning`` (from their task-received events)."""
        return list(dict.fromkeys(e["uuid"] for e in self.events if e["type"] == "task-received"
                                  and e.get("name") == name and mentioning in str(e.get("kwargs", "")) + str(e.get("args", ""))))

    def close(self) -> None:
        self._receiver.should_stop = True
        self._thread.join()
        self._connection.release()
