"""The notebook panel updates in place while ``ingest`` runs in the same kernel, and leaves a static figure.

A real kernel runs ``with ragopt.watch(rag): ingest(...)``; the test reads the
widget state the kernel sends (comm messages on iopub). A callback holds the
ingestion at its first finished document until the panel has shown it, so an
update showing part of the run exists whatever the machine's speed.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest

from ragopt.measure.workloads import SAMPLE_CORPUS, corpus_files

SETUP = """
import time
from raganything.callbacks import ProcessingCallback
from ragopt import RagoptConfig, watch
from ragopt.backends import make_backends
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import ingest

config = RagoptConfig(sim_preset="fast", enable_parse_cache=False)
backends = make_backends(config)
rag = build_rag(config, {kb!r}, backends, optimized=True)
files = {files!r}

class HeldUntilShown(ProcessingCallback):
    def on_document_complete(self, **_):
        while not any(shown["docs_ok"] >= 1 for shown in panel.shown):  # the kernel's widget state, refreshed by its thread
            time.sleep(0.05)
"""
RUN = """
with watch(rag, slots=backends.slots, simulator=backends.simulator, interval_s=0.2) as panel:
    rag.callback_manager.register(HeldUntilShown())  # after the panel's live view
    result = ingest(rag, files, config=config, progress=False)
print(json.dumps(result.counts()))
"""


def _run_cell(client, code: str) -> list:
    """Every iopub message from the cell's start to its end, in order (the panel's thread sends without a parent)."""
    msg_id = client.execute(code)
    messages = []
    while True:
        message = client.get_iopub_msg(timeout=600)
        messages.append(message)
        if (message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
                and message["parent_header"].get("msg_id") == msg_id):
            return messages


def _failed(messages: list) -> str:
    return "\n".join("\n".join(m["content"]["traceback"]) for m in messages if m["msg_type"] == "error")


@pytest.mark.slow
def test_the_panel_updates_while_ingest_runs_and_leaves_a_static_figure(tmp_path):
    from jupyter_client.manager import start_new_kernel

    files = [str(p) for p in corpus_files(SAMPLE_CORPUS) if p.suffix in (".md", ".txt")]
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        setup = _run_cell(client, "import json\n" + SETUP.format(kb=str(tmp_path / "kb"), files=files))
        assert not _failed(setup), _failed(setup)
        messages = _run_cell(client, textwrap.dedent(RUN))
        assert not _failed(messages), _failed(messages)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)

    opened = {m["content"]["comm_id"]: m["content"]["data"]["state"] for m in messages if m["msg_type"] == "comm_open"}
    numbers_id, = [comm for comm, state in opened.items() if state.get("_model_name") == "HTMLModel"]
    figure_id, = [comm for comm, state in opened.items() if state.get("_model_name") == "AnyModel"]
    updates = [m["content"] for m in messages if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update"]
    shown_docs = [int(re.search(r"data-key='docs_ok'>(\d+)<", u["data"]["state"]["value"]).group(1))
                  for u in updates if u["comm_id"] == numbers_id and "value" in u["data"]["state"]]
    # A batch_update of traces alone is a restyle message; with the layout too (K's line, the title), an update.
    restyles = [(u["data"]["state"].get("_py2js_restyle") or {}).get("restyle_data")
                or (u["data"]["state"].get("_py2js_update") or {}).get("style_data")
                for u in updates if u["comm_id"] == figure_id]
    points = [len(data["x"][0]) for data in restyles if data and "x" in data]
    # Part of the run shown while it went on (the run was held there), then all of it.
    assert 0 < min(n for n in shown_docs if n) < len(files) == shown_docs[-1], shown_docs
    assert shown_docs == sorted(shown_docs)
    assert len(points) >= 3 and points == sorted(points) and points[-1] > points[0], (
        points, [sorted(u["data"]["state"]) for u in updates if u["comm_id"] == figure_id][:5])  # the charts grew in place
    closed = [m for m in messages if m["msg_type"] == "comm_close" and m["content"]["comm_id"] == figure_id]
    static = [m["content"]["data"]["application/vnd.plotly.v1+json"] for m in messages
              if m["msg_type"] == "display_data" and "application/vnd.plotly.v1+json" in m["content"]["data"]]
    assert closed and len(static) == 1, "the live figure closes and a static one stays in the output"
    documents_done = static[0]["data"][0]
    assert documents_done["name"] == "documents done" and documents_done["y"][-1] == len(files)
    printed = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
    assert json.loads(printed.strip().splitlines()[-1])["ok"] == len(files)
