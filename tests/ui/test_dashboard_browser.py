"""The live page in a real browser (Debian's chromium and chromium-driver) during a real ingestion of the sample.

The ingestion is frozen at two moments (a callback registered after the
Recorder's and the live view's holds RAG-Anything's event loop, so no
listener sees anything new): mid-run at its first finished document, and
after its end. At each, once the page has rendered an update sampled after
the freeze, its numbers must equal /metrics and a Recorder's Run of the same
moment. Meanwhile /metrics is scraped again and again: it must parse and no
counter may decrease. A screenshot is written to reports/test-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragopt.config import RagoptConfig
from ragopt.measure.live import LiveMetrics, published
from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files
from ragopt.ui.dashboard import Dashboard

CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "reports" / "test-artifacts"
INTERVAL_S = 0.3
# Counters: (the page's number, its /metrics sample name, labels it must have)
COUNTERS = {
    "docs_ok": ("ragopt_documents_total", {"status": "ok"}),
    "docs_failed": ("ragopt_documents_total", {"status": "failed"}),
    "llm_calls": ("ragopt_llm_requests_total", {}),
    "prompt_tokens": ("ragopt_llm_prompt_tokens_total", {}),
    "completion_tokens": ("ragopt_llm_completion_tokens_total", {}),
    "embedding_calls": ("ragopt_embedding_calls_total", {}),
    "embedding_texts": ("ragopt_embedding_texts_total", {}),
    "storage_flushes": ("ragopt_storage_flushes_total", {}),
    "llm_cache_hits": ("ragopt_cache_lookups_total", {"cache": "llm_cache", "result": "hit"}),
    "llm_cache_misses": ("ragopt_cache_lookups_total", {"cache": "llm_cache", "result": "miss"}),
}


def _browser():
    if shutil.which("chromium") is None or not Path(CHROMEDRIVER).exists():
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1800"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _metrics(url: str) -> Dict[tuple, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as answer:
        text = answer.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _sum(values: Dict[tuple, float], name: str, **labels: str) -> float:
    return sum(v for (n, l), v in values.items() if n == name and set(labels.items()) <= set(l))


def _from_run(run: Any) -> Dict[str, float]:
    """The same counters, from a Recorder's Run."""
    llm, cache = run.llm_calls, run.caches.get("llm_cache", {})
    return {"docs_ok": int((run.docs["status"] == "ok").sum()), "docs_failed": int((run.docs["status"] == "failed").sum()),
            "llm_calls": len(llm), "prompt_tokens": int(llm["prompt_tokens"].fillna(0).sum()),
            "completion_tokens": int(llm["completion_tokens"].fillna(0).sum()),
            "embedding_calls": len(run.embedding_calls), "embedding_texts": int(run.embedding_calls["texts"].sum()),
            "storage_flushes": len(run.flushes), "llm_cache_hits": cache.get("hits", 0),
            "llm_cache_misses": cache.get("misses", 0)}


class _Page:
    def __init__(self, driver, dashboard: Dashboard):
        self.driver, self.dashboard = driver, dashboard

    def read(self) -> Dict[str, Any]:
        """Numbers, update number and chart points, in one turn of the page's script (so they belong together)."""
        return self.driver.execute_script("""
            const numbers = {};
            for (const b of document.querySelectorAll('section.run b[data-key]')) numbers[b.dataset.key] = JSON.parse(b.dataset.value || 'null');
            const chart = document.getElementById('chart-docs');
            return {seq: Number(document.getElementById('seq').textContent), numbers: numbers,
                    points: chart.data && chart.data.length ? chart.data[0].x.length : 0,
                    simulated: !document.getElementById('simulated').hidden,
                    titles: [...document.querySelectorAll('.gtitle')].map(t => t.textContent)};""")

    def after(self, seq: int) -> Dict[str, Any]:
        """The page once it shows an update the server sampled after ``seq`` (the test's timeout bounds the wait)."""
        while True:
            shown = self.read()
            if shown["seq"] > seq and shown["numbers"]:
                return shown
            time.sleep(INTERVAL_S / 3)


class _Freezes:
    """A RAG-Anything callback that holds the event loop at the first finished document until the test lets go."""

    def __init__(self):
        from raganything.callbacks import ProcessingCallback

        self.frozen, self.thawed = threading.Event(), threading.Event()
        freezes = self

        class Freeze(ProcessingCallback):
            def on_document_complete(self, **_: Any) -> None:
                if not freezes.frozen.is_set():
                    freezes.frozen.set()
                    freezes.thawed.wait()

        self.callback = Freeze()


def _compare(page: Dict[str, Any], metrics: Dict[tuple, float], run: Any, moment: str) -> None:
    recorded = _from_run(run)
    for key, (name, labels) in COUNTERS.items():
        assert page["numbers"][key] == _sum(metrics, name, **labels) == recorded[key], \
            f"{moment}: {key} page {page['numbers'][key]}, /metrics {_sum(metrics, name, **labels)}, Recorder {recorded[key]}"


@pytest.mark.slow
def test_the_page_follows_a_real_ingestion_and_agrees_with_metrics_and_the_recorder(tmp_path):
    from ragopt.backends import make_backends
    from ragopt.engine.build import build_rag
    from ragopt.engine.orchestrator import ingest
    from ragopt.engine.release import release_rag
    from ragopt.measure.recorder import Recorder

    driver = _browser()
    config = RagoptConfig(sim_preset="fast", enable_parse_cache=False)
    backends = make_backends(config)
    whole_run = Recorder(slots=backends.slots, label="whole run")
    rag = build_rag(config, tmp_path / "kb", backends, whole_run, optimized=True)
    up_to_the_freeze = Recorder(slots=backends.slots, label="up to the freeze").attach(rag)
    live = LiveMetrics("browser test", slots=backends.slots, simulated=backends.simulated, backend=backends.description,
                       simulator=backends.simulator).attach(rag)
    freezes = _Freezes()
    rag.callback_manager.register(freezes.callback)  # after the Recorders' and the live view's callbacks
    documents = [p for p in corpus_files(SAMPLE_CORPUS) if p.suffix in (".md", ".txt", ".html")]
    scrapes: List[Dict[tuple, float]] = []
    seen: Dict[str, Any] = {}
    done = threading.Event()
    failures: List[BaseException] = []

    def scrape_until_done() -> None:
        while not done.is_set():
            scrapes.append(_metrics(dashboard.url))
            time.sleep(INTERVAL_S / 2)

    def at_the_freeze() -> None:
        try:
            freezes.frozen.wait()
            seq = dashboard.seq
            seen["mid"] = page.after(seq)
            seen["mid_metrics"] = _metrics(dashboard.url)
            seen["mid_run"] = up_to_the_freeze.stop()
        except BaseException as error:  # reported by the test's own thread
            failures.append(error)
        finally:
            freezes.thawed.set()

    with Dashboard(port=0, interval_s=INTERVAL_S) as dashboard:
        page = _Page(driver, dashboard)
        try:
            with published(rag, dashboard, live):
                whole_run.start()
                up_to_the_freeze.start()
                driver.get(dashboard.url + "/")
                threads = [threading.Thread(target=scrape_until_done), threading.Thread(target=at_the_freeze)]
                for thread in threads:
                    thread.start()
                try:
                    result = ingest(rag, documents, config=config, progress=False)
                finally:
                    freezes.frozen.set()
                    freezes.thawed.set()
                    done.set()
                    for thread in threads:
                        thread.join()
                up_to_the_freeze.detach(rag)
                run = whole_run.stop()
                whole_run.detach(rag)  # what follows (releasing the rag) is no part of the run
                live.detach(rag)
                end = page.after(dashboard.seq)
                end_metrics = _metrics(dashboard.url)
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        finally:
            driver.quit()
            release_rag(rag)

    assert not failures, failures
    assert result.counts()["ok"] == len(documents), result.files
    mid = seen["mid"]
    _compare(mid, seen["mid_metrics"], seen["mid_run"], "at the first finished document")
    _compare(end, end_metrics, run, "after the end")
    # The page moved: new chart points, other numbers; and it says the LLM is the simulator.
    assert end["points"] > mid["points"] > 0
    assert mid["numbers"]["docs_ok"] < end["numbers"]["docs_ok"] == len(documents)
    # (LLM calls need not grow after the first finished document: on a busy machine every extraction may be done by then.)
    assert end["simulated"] and any("simulated LLM service" in title for title in end["titles"])
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 0
    # Every scrape parsed; no counter ever went down.
    assert len(scrapes) >= 2
    for earlier, later in zip(scrapes, scrapes[1:]):
        for key, value in earlier.items():
            if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
                assert later.get(key, value) >= value, f"{key} went down: {value} -> {later[key]}"
