"""The kind of an LLM request, from its prompt: extract, glean, summary, keywords, query, table, image, ...

The same for the simulator (which answers by kind) and for any real endpoint
(the observation layer names each call's kind, so a ledger and a dashboard
read kinds, not "unknown"). Written against LightRAG 1.4.16's and RAG-Anything
1.4.3's prompt templates.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, List, Optional, Tuple

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


# LightRAG's extraction prompt quotes its chunk between these fences (the first pair:
# a system prompt's examples use them too); a gleaning prompt carries the extraction
# prompt as its first user turn.
_INPUT_TEXT = re.compile(r"<Input Text>\n```\n(.*?)\n```\s*<Output>", re.DOTALL)


def extraction_input(prompt: str, history: Iterable[dict] = ()) -> Optional[str]:
    """The chunk of text an extraction or gleaning prompt is about, or None for any other prompt."""
    for text in (prompt, *(m.get("content") for m in history if m.get("role") == "user")):
        match = _INPUT_TEXT.search(text) if isinstance(text, str) else None
        if match:
            return match.group(1)
    return None


def text_key(text: str) -> str:
    """A short key of a chunk's text: the same for the chunk LightRAG stores and a prompt that quotes it.

    Both sides go through LightRAG's own prompt sanitizer (LightRAG sends prompts
    through it, stores chunks without it), so HTML entities and stray control
    characters cannot tell them apart.
    """
    from lightrag.utils import sanitize_text_for_encoding

    return hashlib.blake2b(sanitize_text_for_encoding(text).encode(), digest_size=12).hexdigest()


RELATION_JOIN = "\x1f"  # between a relation's two (sorted) entity names in its key


def extraction_keys(answer: str) -> List[str]:
    """The graph keys an extraction or gleaning answer names, in LightRAG's record format: an entity's name,
    or a relation's two names sorted and joined by ``RELATION_JOIN`` (LightRAG's graph is undirected). LightRAG
    merges one description per chunk into each key; enough of them make it summarize (the planner counts them)."""
    from lightrag.prompt import PROMPTS

    delimiter = PROMPTS["DEFAULT_TUPLE_DELIMITER"]
    keys = []
    for line in answer.splitlines():
        fields = [f.strip() for f in line.split(delimiter)]
        if len(fields) >= 4 and fields[0].lower() == "entity" and fields[1]:
            keys.append(fields[1])
        elif len(fields) >= 5 and fields[0].lower() == "relation" and fields[1] and fields[2]:
            keys.append(RELATION_JOIN.join(sorted(fields[1:3])))
    return keys
