"""Gleaning served before new extraction in LightRAG's LLM queue."""

from __future__ import annotations

import functools
from typing import Any

from ragopt.compat.lightrag import GLEAN_PRIORITY, set_llm_priority
from ragopt.engine.registry import AFTER_INIT, Optimization, register_optimization


def prioritize_gleaning(lightrag: Any) -> None:
    """Serve a chunk's gleaning call before new extraction calls in LightRAG's LLM queue.

    LightRAG queues every chunk's extract call as soon as its document starts,
    and the gleaning call (the same chunk's follow-up, with the extract
    exchange as history) joins the back of the queue. With many documents in
    flight, no document finishes extracting until nearly every extract call is
    done, so the merge phase (embedding, CPU) only starts after the LLM work and
    the two run one after the other. Gleans first finish the documents already
    started, so merges overlap the remaining extraction. Same calls, same prompts.
    """
    queued = lightrag.llm_model_func

    @functools.wraps(queued)  # keeps its ``shutdown`` (release_rag stops the queue's workers)
    async def gleans_first(*args: Any, **kwargs: Any):
        if kwargs.get("history_messages"):
            set_llm_priority(kwargs, GLEAN_PRIORITY)
        return await queued(*args, **kwargs)

    lightrag.llm_model_func = gleans_first


register_optimization(Optimization(
    name="gleaning_priority",
    field="gleaning_priority",
    summary="a chunk's gleaning call goes before new extraction calls, so documents finish and merge early",
    when=AFTER_INIT,
    install=lambda target: prioritize_gleaning(target.rag.lightrag),
))
