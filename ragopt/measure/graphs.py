"""The knowledge graph a run built, read from its working directory, and compared.

LightRAG's NetworkX storage writes ``graph_chunk_entity_relation.graphml`` in
the working directory (a ``Run``'s ``meta["working_dir"]``). Node IDs are
entity names; edges are undirected relations. Two ingestion strategies that
do the same work must build graphs with the same entities and the same
relation endpoints, whatever order they processed the documents in, so the
comparison looks at names and endpoint pairs only, not at descriptions,
timestamps or source IDs (those name chunks, files and times).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, FrozenSet, Set, Tuple, Union

GRAPH_FILE = "graph_chunk_entity_relation.graphml"

Signature = Tuple[Set[str], Set[FrozenSet[str]]]


def graph_file(working_dir: Union[str, Path]) -> Path:
    """The GraphML file in ``working_dir`` (or in its workspace subfolder, if it has one)."""
    working_dir = Path(working_dir)
    direct = working_dir / GRAPH_FILE
    if direct.is_file():
        return direct
    nested = sorted(working_dir.glob(f"*/{GRAPH_FILE}"))
    if len(nested) == 1:
        return nested[0]
    raise FileNotFoundError(f"no {GRAPH_FILE} in {working_dir}" + (f" (found {len(nested)} in subfolders)" if nested else ""))


def graph_signature(working_dir: Union[str, Path]) -> Signature:
    """(entity names, relations as frozensets of their two endpoint names) of the graph in ``working_dir``."""
    import networkx as nx

    graph = nx.read_graphml(graph_file(working_dir))
    entities = {str(node) for node in graph.nodes}
    relations = {frozenset((str(u), str(v))) for u, v in graph.edges}
    return entities, relations


async def stored_graph_signature(lightrag: Any) -> Signature:
    """The same signature read through LightRAG's graph storage API (any graph storage, not only GraphML)."""
    graph = lightrag.chunk_entity_relation_graph
    entities = {str(node["id"]) for node in await graph.get_all_nodes()}
    relations = {frozenset((str(edge["source"]), str(edge["target"]))) for edge in await graph.get_all_edges()}
    return entities, relations


def _as_signature(graph: Union[str, Path, Signature]) -> Signature:
    if isinstance(graph, tuple):
        return graph
    return graph_signature(graph)


def _relation_text(relation: FrozenSet[str]) -> str:
    ends = sorted(relation)
    return " -- ".join(ends if len(ends) == 2 else ends * 2)  # a self-loop has one endpoint


MIN_ENTITIES = 20  # fewer, and two graphs are too small to be called the same


def compare_graphs(a: Union[str, Path, Signature], b: Union[str, Path, Signature], show: int = 5,
                   min_entities: int = MIN_ENTITIES) -> Dict[str, Any]:
    """Whether two graphs hold the same entities and relations; ``a``/``b`` are working dirs or signatures.

    Returns same (both equal), same_entities, same_relations, the counts of
    each graph, and up to ``show`` entities and relations found in only one of
    them. Graphs with fewer than ``min_entities`` entities, or no relation,
    are never called the same (``comparable`` is False): two empty graphs
    are equal and prove nothing.

    Runs whose working dirs differ can differ here for that reason alone:
    RAG-Anything puts each image's path (under the working dir) into the
    text of its chunk, and the LLM reads names off it. Compare runs made
    in the same working-dir path.
    """
    entities_a, relations_a = _as_signature(a)
    entities_b, relations_b = _as_signature(b)
    comparable = min(len(entities_a), len(entities_b)) >= min_entities and bool(relations_a) and bool(relations_b)
    return {
        "same": comparable and entities_a == entities_b and relations_a == relations_b,
        "comparable": comparable,
        "same_entities": entities_a == entities_b,
        "same_relations": relations_a == relations_b,
        "entities_a": len(entities_a),
        "entities_b": len(entities_b),
        "relations_a": len(relations_a),
        "relations_b": len(relations_b),
        "entities_only_in_a": sorted(entities_a - entities_b)[:show],
        "entities_only_in_b": sorted(entities_b - entities_a)[:show],
        "relations_only_in_a": sorted(_relation_text(r) for r in relations_a - relations_b)[:show],
        "relations_only_in_b": sorted(_relation_text(r) for r in relations_b - relations_a)[:show],
    }
