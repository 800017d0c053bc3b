"""The kind of an LLM request, from its prompt: extract, glean, summary, keywords, query, table, image, ...

The same for the simulator (which answers by kind) and for any real endpoint
(the observation layer names each call's kind, so a ledger and a dashboard
read kinds, not "unknown"). Written against LightRAG 1.4.16's and RAG-Anything
1.4.3's prompt templates.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

KINDS = (
    "extract", "glean", "summary", "keywords", "query",
    "table", "equation", "image", "modal", "describe", "other",
)

# Marker phrases near the start of each template (within _HEAD characters, so
# that document text quoted later in a prompt cannot change its kind), checked
# in this order. tests/test_llm_sim.py builds the prompts from the installed
# templates, so a marker that drifts from them fails there.
_HEAD = 300
_MARKERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("glean", ("Based on the last extraction task",)),
    ("extract", ("Extract entities and relationships from the input text",)),
    ("summary", ("synthesize a list of descriptions of a given entity or relation",)),
    ("keywords", ("You are an expert keyword extractor",)),
    ("table", ("Please analyze this table content",)),
    ("equation", ("Please analyze this mathematical equation",)),
    ("image", ("Please analyze this image in detail", "Based on the following image information")),
    ("describe", (  # RAG-Anything's query-time descriptions of multimodal content
        "Please briefly describe the main content, key elements",
        "key information of the following table data",
        "Please explain the meaning and purpose of the following mathematical formula",
        "type content and extract its main information",
    )),
)
_GENERIC_MODAL = re.compile(r"Please analyze this (.{1,40}?) content")
_VLM_QUESTION_MARKER = "User Question:"  # RAG-Anything's VLM-enhanced query, at the end
_RAG_SYSTEM_MARKER = "synthesizing information from a provided knowledge base"


def classify(prompt: str, system_prompt: Optional[str] = None) -> str:
    """Name the kind of prompt: one of KINDS."""
    head = prompt[:_HEAD]
    for kind, markers in _MARKERS:
        if any(marker in head for marker in markers):
            return kind
    if _GENERIC_MODAL.search(head) and '"entity_info"' in prompt:
        return "modal"
    if _VLM_QUESTION_MARKER in prompt or (system_prompt and _RAG_SYSTEM_MARKER in system_prompt):
        return "query"
    return "other"
