"""Publishing a run's live metrics to a dashboard in another process.

A report's isolated runs and a notebook beside ``ragopt dashboard`` run in
other processes than the page: ``PushPublisher`` posts the run's metric
families to the page's ``/api/push`` every interval and once more when the
run finishes. A page that goes away never stops the run (a warning, once).
"""

from __future__ import annotations

import json
import threading
import urllib.request
import warnings
from typing import Any, Dict

from ragopt.measure.live import LiveMetrics, families_to_json

PUSH_PATH = "/api/push"


def push_payload(live: LiveMetrics) -> Dict[str, Any]:
    return {"meta": live.meta(), "families": families_to_json(live.families())}


class PushPublisher:
    """Sends ``LiveMetrics`` to the dashboard at ``url`` (``http://127.0.0.1:PORT``) while the run goes on."""

    def __init__(self, url: str, interval_s: float = 1.0, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.interval_s, self.timeout_s = interval_s, timeout_s
        self._threads: Dict[str, tuple] = {}
        self._warned = False

    def publish(self, live: LiveMetrics) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._loop, args=(live, stop), name="ragopt-live-push", daemon=True)
        self._threads[live.run_id] = (thread, stop)
        thread.start()

    def finish(self, live: LiveMetrics) -> None:
        thread, stop = self._threads.pop(live.run_id, (None, None))
        if thread is not None:
            stop.set()
            thread.join()
        self.push(live)  # the final numbers, after the run's last event

    def push(self, live: LiveMetrics) -> None:
        body = json.dumps(push_payload(live), default=str).encode()
        request = urllib.request.Request(self.url + PUSH_PATH, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):
                pass
        except OSError as error:
            if not self._warned:
                self._warned = True
                warnings.warn(f"the live page at {self.url} did not take this run's metrics ({error}); the run goes on",
                              RuntimeWarning, stacklevel=2)

    def _loop(self, live: LiveMetrics, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            self.push(live)
