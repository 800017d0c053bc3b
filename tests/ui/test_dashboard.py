"""The dashboard server: local assets, /metrics in Prometheus format, loopback by default, clear errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import plotly
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragopt.config import DEFAULT_METRICS_PORT, RagoptConfig
from ragopt.measure.live import LiveMetrics
from ragopt.measure.live_push import PushPublisher
from ragopt.ui import monitoring
from ragopt.ui.dashboard import STATIC, Dashboard, DashboardPortError

MS = 1_000_000


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read()


@pytest.fixture
def dashboard():
    with Dashboard(port=0, interval_s=0.05) as served:
        yield served


def test_every_asset_is_local_and_plotly_is_the_installed_one(dashboard):
    page = _get(dashboard.url + "/").decode()
    scripts = re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page)
    assert scripts and all(s.startswith("/static/") for s in scripts), scripts
    installed = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert _get(dashboard.url + "/static/plotly.min.js") == installed.read_bytes()
    for asset in STATIC.iterdir():
        text = _get(f"{dashboard.url}/static/{asset.name}").decode()
        assert "://" not in text.replace("http://www.w3.org", ""), f"{asset.name} reaches out of the machine"
    with pytest.raises(urllib.error.HTTPError) as missing:
        _get(dashboard.url + "/static/..%2Fdashboard.py")
    assert missing.value.code == 404


def test_metrics_parse_and_each_sample_names_its_run(dashboard):
    live = LiveMetrics("parse-me", slots=8).start()
    live.llm_call(0, 300 * MS, {"kind": "extract", "prompt_tokens": 10, "completion_tokens": 3, "token_source": "simulator"}, None)
    live.document_event("document_complete", file_path="a", duration_seconds=2.0)
    dashboard.publish(live)
    families = {f.name: f for f in text_string_to_metric_families(_get(dashboard.url + "/metrics").decode())}
    assert {"ragopt_documents", "ragopt_llm_requests", "ragopt_run_info", "ragopt_document_duration_seconds",
            "ragopt_llm_request_duration_seconds", "ragopt_llm_slots"} <= set(families)
    assert families["ragopt_documents"].type == "counter"
    assert families["ragopt_document_duration_seconds"].type == "histogram"
    assert families["ragopt_llm_request_duration_seconds"].type == "histogram"
    done = [s for s in families["ragopt_documents"].samples if s.name == "ragopt_documents_total"]
    assert [(s.labels, s.value) for s in done] == [({"run": live.run_id, "status": "ok"}, 1.0)]
    info, = families["ragopt_run_info"].samples
    assert info.labels["simulated"] == "true" and info.labels["run"] == live.run_id


def test_a_live_view_with_a_simulator_exports_requests_in_flight(dashboard):
    class Simulator:
        in_flight, queued = 3, 1

    dashboard.publish(LiveMetrics("sim", slots=8, simulator=Simulator()))
    text = _get(dashboard.url + "/metrics").decode()
    assert re.search(r'^ragopt_llm_requests_in_flight\{run="sim-\w+"\} 3\.0$', text, re.M)
    assert re.search(r'^ragopt_llm_slots\{run="sim-\w+"\} 8\.0$', text, re.M)


def test_the_page_snapshot_is_read_from_the_same_families(dashboard):
    live = LiveMetrics("snap", slots=8).start()
    live.document_event("document_complete", file_path="a", duration_seconds=1.0)
    live.finish()
    dashboard.publish(live)
    dashboard.sample()
    snapshot = json.loads(_get(dashboard.url + "/api/snapshot"))
    run, = snapshot["runs"]
    assert run == json.loads(json.dumps(live.headline(), default=str))
    assert snapshot["points"][live.run_id][-1]["docs_ok"] == 1


def test_a_server_error_shows_no_traceback(dashboard):
    assert dashboard.debug is False

    class Broken:
        run_id = "broken"

        def families(self):
            raise RuntimeError("secret internals")

        def meta(self):
            return {"run": "broken"}

    dashboard.publish(Broken())
    with pytest.raises(urllib.error.HTTPError) as failed:
        _get(dashboard.url + "/metrics")
    body = failed.value.read().decode()
    assert failed.value.code == 500 and "Traceback" not in body and "secret" not in body


def test_a_push_must_have_the_shape_a_run_posts(dashboard):
    request = urllib.request.Request(dashboard.url + "/api/push", data=b'{"meta": {}}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400


def test_a_port_in_use_names_the_port_and_the_variable():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DashboardPortError, match=rf"port {port}.*METRICS_PORT"):
            Dashboard(port=port).start()


def test_the_default_port_is_not_prometheus_own():
    assert RagoptConfig().metrics_port == DEFAULT_METRICS_PORT != 9090
    assert RagoptConfig.from_env({"METRICS_PORT": "9191"}).metrics_port == 9191


def test_the_dashboard_binds_loopback_unless_told():
    with Dashboard(port=0) as served:
        assert served.host == "127.0.0.1"
        assert [host for host, _ in served.addresses] == ["127.0.0.1"]


# -- the entry points ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_monitoring_off_publishes_nowhere():
    assert monitoring.publisher_for(RagoptConfig()) is None  # ENABLE_MONITORING defaults off


def test_monitoring_on_starts_the_page_once_per_process():
    config = RagoptConfig(enable_monitoring=True, metrics_port=_free_port())
    try:
        first = monitoring.publisher_for(config)
        assert isinstance(first, Dashboard) and monitoring.publisher_for(config) is first
        assert json.loads(_get(first.url + "/api/whoami"))["app"] == "ragopt-dashboard"
    finally:
        monitoring.stop_serving()


def test_monitoring_publishes_to_a_ragopt_page_already_on_the_port(dashboard):
    publisher = monitoring.publisher_for(RagoptConfig(enable_monitoring=True, metrics_port=dashboard.port))
    assert isinstance(publisher, PushPublisher) and publisher.url == f"http://127.0.0.1:{dashboard.port}"


def test_monitoring_refuses_a_port_another_program_holds():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DashboardPortError, match="METRICS_PORT"):
            monitoring.publisher_for(RagoptConfig(enable_monitoring=True, metrics_port=port))


def _cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ragopt.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **env})


def test_ragopt_dashboard_serves_on_metrics_port_on_loopback():
    port = _free_port()
    served = _cli("dashboard", env={"METRICS_PORT": str(port)})
    try:
        line = served.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, line + served.stderr.read()
        assert json.loads(_get(f"http://127.0.0.1:{port}/api/whoami"))["app"] == "ragopt-dashboard"
    finally:
        served.terminate()
        served.wait(timeout=60)


def test_ragopt_dashboard_on_a_busy_port_says_which_and_what_to_set():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = _cli("dashboard", env={"METRICS_PORT": str(port)})
        _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2
    assert f"port {port}" in err and "METRICS_PORT" in err and "Traceback" not in err
