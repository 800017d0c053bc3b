"""A real OpenAI-compatible endpoint (OpenAI, vLLM, Ollama's /v1) as LightRAG's LLM.

Chosen by configuration alone (RAGOPT_LLM_BASE_URL, RAGOPT_LLM_API_KEY,
RAGOPT_LLM_MODEL, RAGOPT_VISION_MODEL). The function is a plain ``async def``
closure, as LightRAG requires: it deep-copies its settings, and a callable
object holding a client or a lock breaks its start-up. It reports the
``usage`` the endpoint returns through ``callinfo`` (and, from ragopt's own
simulator served over HTTP, the engine's plan). It does not retry: that is
the retry optimization's job, or LightRAG's binding policy for a baseline
(``ragopt.compat.lightrag.openai_binding_retry``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import httpx

from ragopt.backends import callinfo

REQUEST_TIMEOUT_S = 180.0
PROBE_TIMEOUT_S = 5.0


def served_by_simulator(base_url: str, api_key: Optional[str]) -> bool:
    """Whether ``base_url`` is ragopt's simulator (its ``/models`` names the owner ``ragopt-simulator``).

    An endpoint that cannot be reached or does not list models counts as a real one.
    """
    from ragopt.backends.llm_server import SIMULATOR_OWNER

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(base_url.rstrip("/") + "/models", headers=headers, timeout=PROBE_TIMEOUT_S)
        models = response.json().get("data", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return any(isinstance(m, dict) and m.get("owned_by") == SIMULATOR_OWNER for m in models)


def _messages(prompt: str, system_prompt: Optional[str], history: List[dict], image_data: Any) -> List[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += list(history)
    if image_data is not None:
        image_url = {"url": f"data:image/jpeg;base64,{image_data}"}
        messages.append({"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image_url}]})
    else:
        messages.append({"role": "user", "content": prompt})
    return messages


def _report_usage(usage: Any) -> None:
    if usage is None:
        return
    fields: Dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                              "token_source": "usage"}
    fields.update((getattr(usage, "model_extra", None) or {}).get("ragopt") or {})
    callinfo.report(**fields)


def endpoint_llm_func(base_url: str, api_key: Optional[str], model: str):
    """An LLM (and vision) function over ``base_url``'s chat completions.

    RAG-Anything's image processor passes ``image_data`` (base64), sent in
    OpenAI's multimodal message format; a VLM-enhanced query passes whole
    ``messages``.
    """
    import openai

    clients: Dict[int, Any] = {}  # one client per event loop: httpx pools belong to a loop

    def client() -> Any:
        import asyncio

        key = id(asyncio.get_running_loop())
        if key not in clients:
            clients[key] = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed",
                                              max_retries=0, timeout=REQUEST_TIMEOUT_S)
        return clients[key]

    async def llm(prompt, system_prompt=None, history_messages=None, image_data=None, messages=None,
                  keyword_extraction=False, **kwargs: Any):
        for unused in ("hashing_kv", "stream", "enable_cot"):
            kwargs.pop(unused, None)
        chat = messages or _messages(prompt, system_prompt, history_messages or [], image_data)
        response = await client().chat.completions.create(model=model, messages=chat, **kwargs)
        _report_usage(response.usage)
        return response.choices[0].message.content or ""

    return llm


def probe_dimension(base_url: str, api_key: Optional[str], model: str) -> int:
    """The vector size an embeddings endpoint returns (one request, once, at start-up)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.post(base_url.rstrip("/") + "/embeddings", headers=headers, timeout=REQUEST_TIMEOUT_S,
                          json={"model": model, "input": ["dimension probe"], "encoding_format": "float"})
    response.raise_for_status()
    return len(response.json()["data"][0]["embedding"])


def endpoint_embedding_func(base_url: str, api_key: Optional[str], model: str, dim: Optional[int] = None):
    """A LightRAG ``EmbeddingFunc`` over an OpenAI-compatible ``/embeddings`` endpoint, through
    LightRAG's own OpenAI binding (its retries included); ``dim`` is probed when not given."""
    from lightrag.llm.openai import openai_embed
    from lightrag.utils import EmbeddingFunc

    async def embed(texts, **_: Any):
        # max_token_size=0: no client-side truncation (it would fetch a tokenizer for the model name).
        return await openai_embed.func(list(texts), model=model, base_url=base_url, api_key=api_key or "not-needed", max_token_size=0)

    return EmbeddingFunc(embedding_dim=dim or probe_dimension(base_url, api_key, model), max_token_size=8192, func=embed, model_name=model)
