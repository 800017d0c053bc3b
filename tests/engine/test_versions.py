"""Edited and deleted files: the previous version is deleted through LightRAG's own deletion, nothing else changes."""

from __future__ import annotations

import pytest

from ragopt.aio import run_sync
from ragopt.config import RagoptConfig
from ragopt.engine.build import build_rag
from ragopt.engine.orchestrator import ingest
from ragopt.engine.release import release_rag
from ragopt.measure.graphs import stored_graph_signature
from ragopt.measure.integrity import doc_status_records

FAST = RagoptConfig(sim_preset="fast")
pytestmark = pytest.mark.slow  # three ingestions and two deletions

ALPHA_V1 = ("Zanzibar Quantum Works hired Olga Petrovna in Lisbon to study solid-state batteries.\n"
            "Olga Petrovna presented the results of Zanzibar Quantum Works at a workshop in Lisbon.\n")
ALPHA_V2 = ("Yellowstone Robotics hired Marta Ruiz in Osaka to study wind turbine maintenance.\n"
            "Marta Ruiz presented the results of Yellowstone Robotics at a workshop in Osaka.\n")
BETA = ("Cedar Health opened a research office in Lisbon, led by Dana Tanaka.\n"
        "Dana Tanaka of Cedar Health met Helios Energy in Lisbon about fraud detection.\n")


def _state(rag):
    async def read():
        return await stored_graph_signature(rag.lightrag), await doc_status_records(rag.lightrag)

    return run_sync(read())


def _ingest(working_dir, paths, **kwargs):
    rag = build_rag(FAST, working_dir, optimized=True)
    try:
        result = ingest(rag, paths, config=FAST, progress=False, **kwargs)
        graph, records = _state(rag)
    finally:
        release_rag(rag)
    assert result.counts()["failed"] == 0, result.files[["file", "status", "error"]]
    return result, graph, records


def test_an_edited_file_replaces_its_previous_version_and_a_removed_one_is_deleted(tmp_path):
    alpha, beta = tmp_path / "docs" / "alpha.txt", tmp_path / "docs" / "beta.txt"
    alpha.parent.mkdir()
    alpha.write_text(ALPHA_V1)
    beta.write_text(BETA)
    _, (first_entities, first_relations), first_records = _ingest(tmp_path / "kb", [alpha, beta])
    assert {"Zanzibar Quantum Works", "Olga Petrovna", "Lisbon", "Cedar Health"} <= first_entities

    alpha.write_text(ALPHA_V2)  # the user edits the file
    result, (entities, relations), records = _ingest(tmp_path / "kb", [alpha, beta])
    assert dict(zip(result.files["file"].map(lambda f: f.rsplit("/", 1)[-1]), result.files["status"])) == {"alpha.txt": "ok", "beta.txt": "skipped"}
    assert "Zanzibar Quantum Works" not in entities and "Olga Petrovna" not in entities  # only the old version had them
    assert {"Yellowstone Robotics", "Marta Ruiz", "Osaka"} <= entities  # the new version's
    assert {"Lisbon", "Cedar Health", "Dana Tanaka"} <= entities  # still supported by beta: kept
    beta_relations = {r for r in first_relations if not r & {"Zanzibar Quantum Works", "Olga Petrovna"}
                      and r & {"Cedar Health", "Dana Tanaka", "Helios Energy"}}
    assert beta_relations <= relations  # nothing of beta's changed
    assert sorted(r["file_path"] for r in records.values()) == ["alpha.txt", "beta.txt"]  # one record per file
    assert set(records) != set(first_records) and len(records) == 2

    beta.unlink()  # the user removes a file
    _, (entities, _), records = _ingest(tmp_path / "kb", [alpha], remove_missing=True)
    assert "Cedar Health" not in entities and "Dana Tanaka" not in entities
    assert {"Yellowstone Robotics", "Marta Ruiz"} <= entities
    assert [r["file_path"] for r in records.values()] == ["alpha.txt"]


def test_a_removed_document_with_images_and_tables_loses_its_text_entities_too(tmp_path):
    """RAG-Anything's multimodal merge would leave only its own entities listed for the document, so
    LightRAG's deletion would keep the text's; ragopt lists both."""
    from ragopt.measure.workloads import synthetic_corpus

    docx = synthetic_corpus(tmp_path / "docs", 7, seed=9, paragraphs_per_doc=1)[6]  # a DOCX with a table and an image
    assert docx.suffix == ".docx"
    _, (entities, _), _ = _ingest(tmp_path / "kb", [docx])
    assert len(entities) >= 5
    docx.unlink()
    _, (left, _), records = _ingest(tmp_path / "kb", [], remove_missing=True)
    assert records == {} and left == set()
