"""The live dashboard: a page, ``/metrics`` in Prometheus text format, and the endpoint runs publish to.

``Dashboard`` serves on 127.0.0.1 (another host only when asked for by
name) from a thread and event loop of its own, with aiohttp, never in debug
mode. Every asset is local: the page, its script and plotly.js from the
installed plotly package. Its sources are runs: a ``LiveMetrics`` in this
process (``publish``) or the families a run in another process posts to
``/api/push`` (``ragopt.measure.live_push``). Every interval the page's
numbers and chart points are taken from each source's families, the same
families ``/metrics`` merges (each sample labelled with its ``run``), so
the page and ``/metrics`` agree within one interval.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import importlib.resources
import ipaddress
import json
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Optional

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from ragopt.config import DEFAULT_METRICS_PORT, ConfigError
from ragopt.measure.live import LiveMetrics, families_from_json, headline, samples
from ragopt.measure.live_push import PUSH_PATH

STATIC = Path(__file__).resolve().parent / "static"
APP_NAME = "ragopt-dashboard"  # /api/whoami: how another ragopt process recognises the page on a busy port
HISTORY_POINTS = 3600  # per run: an hour at one point a second
FINISHED_RUNS_KEPT = 20
CHART_KEYS = ("elapsed_s", "docs_ok", "llm_in_flight", "llm_queued", "llm_slots", "tokens_per_s", "cpu_pct", "rss_mb")


class DashboardPortError(ConfigError):
    """The dashboard's port is taken; the message names the port and METRICS_PORT."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _LocalSource:
    def __init__(self, live: LiveMetrics):
        self.live = live

    def families(self) -> List[Metric]:
        return self.live.families()

    def meta(self) -> Dict[str, Any]:
        return self.live.meta()


class _PushedSource:
    """The latest families a run in another process posted."""

    def __init__(self, payload: Dict[str, Any]):
        self.update(payload)

    def update(self, payload: Dict[str, Any]) -> None:
        self._families, self._meta = families_from_json(payload["families"]), dict(payload["meta"])

    def families(self) -> List[Metric]:
        return self._families

    def meta(self) -> Dict[str, Any]:
        return self._meta


class _Merged:
    """One family per metric name over every run, each sample labelled with its run (a registry of our own)."""

    def __init__(self, dashboard: "Dashboard"):
        self.dashboard = dashboard

    def collect(self) -> Iterable[Metric]:
        merged: Dict[str, Metric] = {}
        for run, source in self.dashboard.sources():
            for family in source.families():
                into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
                for sample in family.samples:
                    into.add_sample(sample.name, {"run": run, **sample.labels}, sample.value, sample.timestamp)
        return list(merged.values())


class Dashboard:
    """The live page and ``/metrics`` on ``host:port``; a publisher of ``LiveMetrics`` (``publish``/``finish``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_METRICS_PORT, interval_s: float = 1.0):
        self.host, self.port, self.interval_s = host, port, interval_s
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Merged(self))
        self._lock = threading.Lock()
        self._sources: Dict[str, Any] = {}
        self._finished: Deque[str] = collections.deque()
        self._history: Dict[str, Deque[Dict[str, Any]]] = {}
        self._latest: List[Dict[str, Any]] = []
        self.seq = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        self._sampler: Optional[asyncio.Task] = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def addresses(self) -> List[tuple]:
        """(host, port) of each socket it listens on."""
        return list(self._runner.addresses) if self._runner is not None else []

    @property
    def debug(self) -> bool:
        """Whether its event loop runs in debug mode (then aiohttp shows tracebacks to clients): never."""
        return self._loop is not None and self._loop.get_debug()

    # -- publisher ------------------------------------------------------------------
    def publish(self, live: LiveMetrics) -> None:
        """Show ``live`` (a run in this process) from now on."""
        with self._lock:
            self._sources[live.run_id] = _LocalSource(live)

    def finish(self, live: LiveMetrics) -> None:
        """``live`` is done: its last numbers stay on the page (the newest finished runs are kept)."""
        self._retire(live.run_id)

    def sources(self) -> List[tuple]:
        with self._lock:
            return list(self._sources.items())

    def _receive(self, payload: Dict[str, Any]) -> None:
        run = str(payload["meta"]["run"])
        with self._lock:
            source = self._sources.get(run)
            if isinstance(source, _PushedSource):
                source.update(payload)
            else:
                self._sources[run] = _PushedSource(payload)
        if payload["meta"].get("done"):
            self._retire(run)

    def _retire(self, run: str) -> None:
        with self._lock:
            if run in self._finished:
                return
            self._finished.append(run)
            while len(self._finished) > FINISHED_RUNS_KEPT:
                gone = self._finished.popleft()
                self._sources.pop(gone, None)
                self._history.pop(gone, None)

    # -- sampling -------------------------------------------------------------------
    def sample(self) -> None:
        """Take every run's numbers now: the page's next numbers and chart points."""
        runs = [headline(samples(source.families()), source.meta()) for _, source in self.sources()]
        with self._lock:
            self.seq += 1
            for numbers in runs:
                point = {"seq": self.seq, **{key: numbers.get(key) for key in CHART_KEYS}}
                self._history.setdefault(numbers["run"], collections.deque(maxlen=HISTORY_POINTS)).append(point)
            self._latest = runs

    def snapshot(self, after: int = 0) -> Dict[str, Any]:
        """The latest numbers of every run and the chart points newer than ``after``."""
        with self._lock:
            return {
                "app": APP_NAME, "seq": self.seq, "interval_s": self.interval_s, "runs": list(self._latest),
                "points": {run: [p for p in points if p["seq"] > after] for run, points in self._history.items()},
            }

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)

    # -- server ---------------------------------------------------------------------
    def start(self) -> "Dashboard":
        """Bind and serve; a port in use raises ``DashboardPortError``."""
        if not is_loopback(self.host):
            warnings.warn(f"the dashboard serves on {self.host}, beyond loopback: whoever reaches it sees the runs' metrics",
                          RuntimeWarning, stacklevel=2)
        self._loop = asyncio.new_event_loop()
        self._loop.set_debug(False)  # aiohttp shows tracebacks to clients only in debug mode
        self._thread = threading.Thread(target=self._loop.run_forever, name="ragopt-dashboard", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start_site(), self._loop).result()
        except OSError as error:
            self.stop()
            if error.errno == errno.EADDRINUSE:
                raise DashboardPortError(
                    f"port {self.port} on {self.host} is already in use (METRICS_PORT={self.port}): "
                    f"set METRICS_PORT to a free port, or pass --port") from None
            raise
        return self

    async def _start_site(self) -> None:
        app = web.Application()
        app.add_routes([
            web.get("/", self._index),
            web.get("/static/plotly.min.js", self._plotly),
            web.get("/static/{name}", self._static),
            web.get("/metrics", self._metrics),
            web.get("/api/snapshot", self._snapshot),
            web.get("/api/whoami", self._whoami),
            web.post(PUSH_PATH, self._push),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.port == 0:  # asked for any free port: say which
            self.port = self.addresses[0][1]
        self._sampler = asyncio.get_running_loop().create_task(self._sample_every_interval())

    async def _sample_every_interval(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    async def _shutdown(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop.close()
        self._loop = self._thread = self._runner = self._sampler = None

    def __enter__(self) -> "Dashboard":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- handlers -------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        return web.FileResponse(STATIC / "index.html")

    async def _plotly(self, request: web.Request) -> web.Response:
        return web.FileResponse(Path(str(importlib.resources.files("plotly") / "package_data" / "plotly.min.js")))

    async def _static(self, request: web.Request) -> web.Response:
        path = (STATIC / request.match_info["name"]).resolve()
        if path.parent != STATIC or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.metrics_text)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _snapshot(self, request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="after must be an integer") from None
        return web.json_response(self.snapshot(after), dumps=lambda data: json.dumps(data, default=str))

    async def _whoami(self, request: web.Request) -> web.Response:
        return web.json_response({"app": APP_NAME})

    async def _push(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except ValueError:
            payload = None
        if not (isinstance(payload, dict) and isinstance(payload.get("meta"), dict) and "run" in payload["meta"]
                and isinstance(payload.get("families"), list)):
            raise web.HTTPBadRequest(text="expected the JSON a ragopt run posts: meta (with run) and families")
        self._receive(payload)
        return web.json_response({"ok": True, "at": time.time()})
