"""ENABLE_MONITORING at the entry points: the first run of a process starts the live page, and each run publishes to it.

``publisher_for(config)`` is what an entry point (``ragopt.ingest``, the CLI's
``profile`` and ``report``) hands the engine: None when monitoring is off;
this process's ``Dashboard``, started on METRICS_PORT on first use; or, when
that port already serves a ragopt dashboard (``ragopt dashboard`` beside a
notebook, the report's parent process), a ``PushPublisher`` to it. Any other
program on the port is an error naming the port and METRICS_PORT.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import urllib.request
import warnings
from typing import Any, Optional

from ragopt.aio import blocking
from ragopt.config import RagoptConfig
from ragopt.engine import orchestrator
from ragopt.measure.live import LiveMetrics, published
from ragopt.measure.live_push import PushPublisher
from ragopt.resources.budget import MemoryBudget
from ragopt.ui.dashboard import APP_NAME, Dashboard, DashboardPortError

_dashboard: Optional[Dashboard] = None
_lock = threading.Lock()


def dashboard_for(config: RagoptConfig) -> Dashboard:
    """The page ``publisher_for`` serves: METRICS_PORT on loopback (another host only by ``ragopt dashboard --host``)."""
    return Dashboard("127.0.0.1", config.metrics_port)


def serve(dashboard: Dashboard) -> Dashboard:
    """This process's dashboard: ``dashboard`` started, unless one already serves."""
    global _dashboard
    with _lock:
        if _dashboard is None:
            _dashboard = dashboard.start()
            print(f"ragopt: live page on {_dashboard.url} (Prometheus metrics at {_dashboard.url}/metrics)", file=sys.stderr)
        return _dashboard


def stop_serving() -> None:
    """Stop this process's dashboard (the next monitored run starts it again)."""
    global _dashboard
    with _lock:
        if _dashboard is not None:
            _dashboard.stop()
            _dashboard = None


def serves_ragopt_dashboard(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/api/whoami", timeout=2) as answer:
            return json.loads(answer.read()).get("app") == APP_NAME
    except (OSError, ValueError):
        return False


def publisher_for(config: RagoptConfig) -> Any:
    """Where this process's runs publish their live metrics; None with ENABLE_MONITORING off."""
    if not config.enable_monitoring:
        return None
    try:
        return serve(dashboard_for(config))
    except DashboardPortError:
        url = f"http://127.0.0.1:{config.metrics_port}"
        if serves_ragopt_dashboard(url):
            return PushPublisher(url)
        raise


def llm_slots(rag: Any, config: RagoptConfig) -> int:
    """K as ``optimize`` chose it for ``rag``, else the config's."""
    from ragopt.backends import DEFAULT_ENDPOINT_SLOTS, simulator_for

    tuned = getattr(rag, "ragopt_stats", {}).get("tuned_concurrency", {}).get("llm_model_max_async")
    if tuned:
        return tuned
    if config.max_concurrent_processing:
        return config.max_concurrent_processing
    return simulator_for(config).config.slots if config.uses_simulator else DEFAULT_ENDPOINT_SLOTS


@functools.wraps(orchestrator.aingest)
async def aingest(rag: Any, paths: Any, *, config: Optional[RagoptConfig] = None, budget: Optional[MemoryBudget] = None,
                  **options: Any):
    config = config or RagoptConfig.from_env()
    publisher = publisher_for(config)
    if publisher is None:
        return await orchestrator.aingest(rag, paths, config=config, budget=budget, **options)
    if budget is None and config.max_memory_mb:
        budget = MemoryBudget(config.max_memory_mb)  # made here, as the engine would, so the page shows the gate
    live = LiveMetrics("ingest", slots=llm_slots(rag, config), stats=getattr(rag, "ragopt_stats", None), budget=budget)
    try:
        live.attach(rag)
    except RuntimeError as error:  # a rag that can no longer be observed: ingest it anyway
        warnings.warn(f"ENABLE_MONITORING: this ingestion is not shown live ({error})", RuntimeWarning, stacklevel=2)
        return await orchestrator.aingest(rag, paths, config=config, budget=budget, **options)
    with published(rag, publisher, live):
        return await orchestrator.aingest(rag, paths, config=config, budget=budget, **options)


ingest = blocking(aingest)
