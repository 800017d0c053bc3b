"""A real OpenAI-compatible endpoint (OpenAI, vLLM, Ollama's /v1) as LightRAG's LLM.

Chosen by configuration alone (RAGOPT_LLM_BASE_URL, RAGOPT_LLM_API_KEY,
RAGOPT_LLM_MODEL, RAGOPT_VISION_MODEL). The function is a plain ``async def``
closure, as LightRAG requires: it deep-copies its settings, and a callable
object holding a client or a lock breaks its start-up.
"""

from __future__ import annotations

from typing import Any, Optional


def endpoint_llm_func(base_url: str, api_key: Optional[str], model: str):
    """LightRAG's own OpenAI binding pointed at ``base_url``; also serves vision calls.

    RAG-Anything's image processor passes ``image_data`` (base64); it is sent in
    OpenAI's multimodal message format.
    """
    from lightrag.llm.openai import openai_complete_if_cache

    async def llm(prompt, system_prompt=None, history_messages=None, image_data=None, **kwargs: Any):
        kwargs.pop("hashing_kv", None)
        if image_data is not None and "messages" not in kwargs:
            system = [{"role": "system", "content": system_prompt}] if system_prompt else []
            image_url = {"url": f"data:image/jpeg;base64,{image_data}"}
            kwargs["messages"] = system + [
                {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image_url}]}
            ]
        return await openai_complete_if_cache(
            model,
            prompt,
            system_prompt=system_prompt,
            history_messages=history_messages or [],
            base_url=base_url,
            api_key=api_key or "not-needed",
            **kwargs,
        )

    return llm
