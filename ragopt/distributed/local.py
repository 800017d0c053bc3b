"""Redis and ragopt workers as processes on this machine: for a notebook, a benchmark, the tests.

``LocalCluster(parse=2, ingest=1)`` starts Debian's ``redis-server`` on a free
loopback port (or uses ``redis_url``) and that many ``ragopt worker``
processes, each in a process group of its own so that it can be killed whole;
``cluster.app`` is a client app on the same settings. On several machines,
start ``redis-server`` and ``ragopt worker`` yourself (README).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, every_s: float = 0.1):
    """Poll ``condition()`` until it is truthy and return it (the caller's timeout bounds it)."""
    while True:
        value = condition()
        if value:
            return value
        time.sleep(every_s)


class RedisProcess:
    """A ``redis-server`` of its own on 127.0.0.1, append-only persistence on, data in ``folder``."""

    def __init__(self, folder: Path):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.folder, self.port, self.process = Path(folder), free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProcess":
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class WorkerProcess:
    """One ``ragopt worker`` process and its pool, in a process group of its own."""

    def __init__(self, app, queues: str, env: Dict[str, str], log: Path, concurrency: int = 1,
                 name: Optional[str] = None):
        self.app, self.queues, self.env, self.log, self.concurrency = app, queues, env, Path(log), concurrency
        self.name = name or f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "WorkerProcess":
        """Start it and wait until it answers a ping."""
        command = [sys.executable, "-m", "ragopt.cli", "worker", "--queues", self.queues, "--name", self.name,
                   "--concurrency", str(self.concurrency)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_for(self._ready, 0.25)
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {self.name} exited with {self.process.returncode}:\n{tail}")
        return bool(self.app.control.ping([self.name], timeout=0.5))

    def active(self) -> List[dict]:
        """Its running tasks (Celery's inspect: id, name, kwargs, worker_pid)."""
        return (self.app.control.inspect([self.name], timeout=1.0).active() or {}).get(self.name, [])

    def kill(self) -> None:
        """SIGKILL the worker and its pool at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Warm shutdown (running tasks finish), else SIGKILL after 30 s."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


class LocalCluster:
    """Redis (started here unless ``redis_url`` is given) and ragopt workers on this machine.

    ``settings`` are environment variables for the workers and the client app
    (``RAGOPT_SIM_PRESET="fast"``, ``RAGOPT_KB_ROOT=...``) over ``environ``
    (default: this process's environment).
    """

    def __init__(self, parse: int = 0, ingest: int = 0, query: int = 0, redis_url: Optional[str] = None,
                 folder: Optional[str | os.PathLike] = None, environ: Optional[Dict[str, str]] = None,
                 **settings: str):
        from ragopt.config import RagoptConfig
        from ragopt.distributed.app import make_app

        self.folder = Path(folder or tempfile.mkdtemp(prefix="ragopt-cluster-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.redis = None if redis_url else RedisProcess(self.folder).start()
        self.env = {**(os.environ if environ is None else environ), "REDIS_URL": redis_url or self.redis.url, **settings}
        self.config = RagoptConfig.from_env(self.env)
        self.app = make_app(self.config, environ=self.env)
        self.workers: List[WorkerProcess] = []
        try:
            for queues, count in (("parse", parse), ("ingest", ingest), ("query", query)):
                for _ in range(count):
                    self.worker(queues)
        except BaseException:
            self.close()
            raise

    def worker(self, queues: str, concurrency: int = 1, name: Optional[str] = None) -> WorkerProcess:
        """Start one more worker for ``queues`` and wait until it is up."""
        worker = WorkerProcess(self.app, queues, self.env, self.folder / f"worker-{len(self.workers)}.log",
                               concurrency, name)
        self.workers.append(worker)
        return worker.start()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
