import os

# The embedded defaults must never reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ingest() reads RagoptConfig.from_env(): without this it would share the user's parse cache
# across tests. Tests that use the cache hand one in.
os.environ.setdefault("ENABLE_PARSE_CACHE", "false")


# -- real servers, started on free loopback ports --------------------------------------

import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real ``redis-server`` of its own (Debian's package; .ci/run installs it), append-only persistence on."""

    def __init__(self, folder):
        self.folder, self.port, self.process = folder, free_port(), None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while True:  # the test's timeout bounds this
            try:  # a restarted server accepts connections before it has loaded its data (it answers LOADING)
                client.ping()
                client.close()
                return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        """Stop and start again on the same port and data (append-only file)."""
        self.stop()
        self.start()


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server for one test; its URL is ``redis_server.url``."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's package)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs ``-n 3 --dist loadgroup``), a module's tests share a worker, and
    its module-scoped runs are made once; the notebooks, independent of each other, spread over the workers,
    but those that read the one report build (``report_06``)."""
    for item in items:
        if "report_06" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("report_06"))
        elif item.path.name != "test_notebooks.py":
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
