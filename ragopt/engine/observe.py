"""The one place a RAGAnything is observed: listeners on its model calls, storage flushes and cache lookups.

``observation(rag)`` installs, once and before anything else wraps them, a
thin layer at the innermost end of the rag's LLM, vision and embedding
functions (so a listener sees each request the service serves: every retry
attempt, every micro-batch), and, once LightRAG exists, around each
storage's flush and the LLM and parse cache lookups. Listeners (a Recorder,
the live view) come and go at any time; with none, the layer only passes the
call on. Document events travel through RAG-Anything's own CallbackManager,
which ``ragopt.ingest`` dispatches to as RAG-Anything's entry points do.

A listener implements any of ``llm_call(start_ns, end_ns, info, error)``,
``embedding_call(start_ns, end_ns, texts, tokens)``, ``flush(start_ns, end_ns,
storage)``, ``cache_lookup(cache, hit)``, ``llm_cache_hit(info)`` (what a hit
of LightRAG's LLM cache saved: kind and tokens) and ``chunks_stored(chunks)``
(text key -> doc_id, file_path of each chunk LightRAG stores); ``info`` is
what the backend reported through ``ragopt.backends.callinfo``, plus where
the call came from for per-document accounting (``_attribute``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from ragopt.backends import callinfo
from ragopt.compat.lightrag import cached_llm_exchange
from ragopt.compat.raganything import after_initialization, is_initialized, wrap_parse_cache_lookup


def _notify(listeners: List[Any], method: str, *args: Any) -> None:
    for listener in listeners:
        handler = getattr(listener, method, None)
        if handler is not None:
            handler(*args)


# (doc_id, file_path) of the document whose task is running: set at its parse_start and
# text_insert_start events, which ragopt's engine and RAG-Anything dispatch from that task.
current_document: contextvars.ContextVar[Optional[Tuple[Optional[str], Optional[str]]]] = contextvars.ContextVar(
    "ragopt_current_document", default=None)
# RAG-Anything calls its multimodal prompts from the document's own task; LightRAG runs
# extraction and summaries on its queue's worker tasks, whose context is some other one's.
_KINDS_IN_DOCUMENT_TASK = frozenset({"image", "table", "equation", "modal"})


def _request(args: tuple, kwargs: dict) -> Tuple[Optional[str], list, str]:
    """(system prompt, history, prompt) of an LLM call, in either calling convention."""
    from ragopt.backends.llm_sim import split_messages

    if kwargs.get("messages"):
        system_prompt, history, prompt, _ = split_messages(kwargs["messages"])
        return system_prompt, history, prompt
    prompt = args[0] if args else kwargs.get("prompt", "")
    return kwargs.get("system_prompt"), kwargs.get("history_messages") or [], prompt or ""


def _fill_in(info: dict, args: tuple, kwargs: dict, answer: Any) -> None:
    """What a backend did not report: the prompt's kind, and tokens counted with the offline tokenizer."""
    if "kind" in info and "prompt_tokens" in info:
        return
    from ragopt.backends.prompt_kinds import classify
    from ragopt.backends.tokenizer import count_tokens

    system_prompt, history, prompt = _request(args, kwargs)
    info.setdefault("kind", classify(prompt or "", system_prompt))
    if "prompt_tokens" not in info:
        sent = "".join([system_prompt or "", prompt or ""] + [str(m.get("content", "")) for m in history])
        info.update(prompt_tokens=count_tokens(sent), token_source="tokenizer",
                    completion_tokens=count_tokens(answer) if isinstance(answer, str) else 0)


def _attribute(info: dict, args: tuple, kwargs: dict, document: Optional[Tuple[Optional[str], Optional[str]]],
               answer: Any) -> None:
    """Where the call came from: the chunk an extraction or gleaning quotes (``chunk``: its text key,
    resolved to a document by ``chunks_stored``), or the document whose task made a multimodal call;
    and for an extraction, the graph keys its answer names (``graph_keys``: what merges will grow)."""
    from ragopt.backends.prompt_kinds import extraction_input, extraction_keys, text_key

    if info.get("kind") in ("extract", "glean"):
        _, history, prompt = _request(args, kwargs)
        text = extraction_input(prompt, history)
        if text is not None:
            info.setdefault("chunk", text_key(text))
        if isinstance(answer, str):
            info.setdefault("graph_keys", extraction_keys(answer))
    elif info.get("kind") in _KINDS_IN_DOCUMENT_TASK and document is not None:
        info.setdefault("doc_id", document[0])
        info.setdefault("file", document[1])


def observed_llm(func: Callable, listeners: List[Any]) -> Callable:
    """A plain ``async def`` around an LLM function that tells ``listeners`` (a live list) about each call."""

    async def observed(*args: Any, **kwargs: Any):
        if not listeners:
            return await func(*args, **kwargs)
        info: dict = {}
        document = current_document.get()
        token = callinfo.current_call.set(info)
        start_ns, error, answer = time.perf_counter_ns(), None, None
        try:
            answer = await func(*args, **kwargs)
            return answer
        except BaseException as exc:
            error = exc
            raise
        finally:
            callinfo.current_call.reset(token)
            _fill_in(info, args, kwargs, answer)
            _attribute(info, args, kwargs, document, answer)
            _notify(listeners, "llm_call", start_ns, time.perf_counter_ns(), info, error)

    return observed


def observed_embedding(embedding_func: Any, listeners: List[Any]) -> Any:
    """The same LightRAG ``EmbeddingFunc`` with its inner function reported to ``listeners``."""
    inner = embedding_func.func

    async def observed(texts, *args: Any, **kwargs: Any):
        start_ns = time.perf_counter_ns()
        try:
            return await inner(texts, *args, **kwargs)
        finally:
            end_ns = time.perf_counter_ns()
            if listeners:
                from ragopt.backends.tokenizer import count_tokens

                # Tokens in, for the ledger's embedding cost (a local model's texts are counted all the same).
                _notify(listeners, "embedding_call", start_ns, end_ns, len(texts), sum(count_tokens(t) for t in texts))

    return dataclasses.replace(embedding_func, func=observed)


class Observation:
    """The listeners of one rag, and the layer that feeds them."""

    def __init__(self, rag: Any):
        self.listeners: List[Any] = []
        self._callback_manager = rag.callback_manager
        self._by_listener: Dict[int, Any] = {}  # id(listener) -> the RAG-Anything callback it added
        rag.llm_model_func = observed_llm(rag.llm_model_func, self.listeners)
        if rag.vision_model_func is not None:
            rag.vision_model_func = observed_llm(rag.vision_model_func, self.listeners)
        rag.embedding_func = observed_embedding(rag.embedding_func, self.listeners)
        rag.callback_manager.register(_document_callback())
        after_initialization(rag, lambda: self._observe_storages(rag))

    def add(self, listener: Any, callback: Any = None) -> None:
        """Feed ``listener`` the rag's calls; ``callback`` (a RAG-Anything ProcessingCallback) gets its
        document events until ``remove``."""
        if listener in self.listeners:
            return
        self.listeners.append(listener)
        if callback is not None:
            self._by_listener[id(listener)] = callback
            self._callback_manager.register(callback)

    def remove(self, listener: Any) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        callback = self._by_listener.pop(id(listener), None)
        if callback is not None:
            self._callback_manager.unregister(callback)

    def _observe_storages(self, rag: Any) -> None:
        from lightrag.base import StorageNameSpace

        holders = [vars(rag.lightrag), vars(rag)]
        for storage in {id(s): s for h in holders for s in h.values() if isinstance(s, StorageNameSpace)}.values():
            self._time_flushes(storage)
        cache = rag.lightrag.llm_response_cache
        cache.get_by_id = self._valuing_hits(self._counting(cache.get_by_id, "llm_cache"))
        wrap_parse_cache_lookup(rag, lambda lookup: self._counting(lookup, "raganything_parse_cache"))
        self._telling_chunks(rag.lightrag.text_chunks)

    def _time_flushes(self, storage: Any) -> None:
        flush, name = storage.index_done_callback, getattr(storage, "namespace", type(storage).__name__)
        listeners = self.listeners

        async def timed_flush(*args: Any, **kwargs: Any):
            start_ns = time.perf_counter_ns()
            try:
                return await flush(*args, **kwargs)
            finally:
                _notify(listeners, "flush", start_ns, time.perf_counter_ns(), name)

        storage.index_done_callback = timed_flush

    def _counting(self, lookup: Callable, cache: str) -> Callable:
        listeners = self.listeners

        async def counted(*args: Any, **kwargs: Any):
            result = await lookup(*args, **kwargs)
            _notify(listeners, "cache_lookup", cache, result is not None)
            return result

        return counted

    def _valuing_hits(self, lookup: Callable) -> Callable:
        """Tell ``llm_cache_hit`` listeners what each hit saved: the prompt's kind and its tokens in and out."""
        listeners = self.listeners

        async def valued(*args: Any, **kwargs: Any):
            entry = await lookup(*args, **kwargs)
            if entry is not None and listeners:
                from ragopt.backends.prompt_kinds import classify, extraction_input, text_key
                from ragopt.backends.tokenizer import count_tokens

                prompt, answer = cached_llm_exchange(entry)  # the user prompt first, then system prompt and history
                info = {"kind": classify(prompt), "prompt_tokens": count_tokens(prompt),
                        "completion_tokens": count_tokens(answer), "token_source": "tokenizer"}
                text = extraction_input(prompt) if info["kind"] == "extract" else None
                if text is not None:
                    info["chunk"] = text_key(text)
                _notify(listeners, "llm_cache_hit", info)
            return entry

        return valued

    def _telling_chunks(self, text_chunks: Any) -> None:
        """Tell ``chunks_stored`` listeners which document each stored chunk belongs to (``full_doc_id``)."""
        upsert, listeners = text_chunks.upsert, self.listeners

        async def upsert_and_tell(data: dict, *args: Any, **kwargs: Any):
            if listeners:
                from ragopt.backends.prompt_kinds import text_key

                chunks = {text_key(record["content"]): {"doc_id": record.get("full_doc_id"), "file_path": record.get("file_path")}
                          for record in data.values() if isinstance(record, dict) and record.get("content")}
                _notify(listeners, "chunks_stored", chunks)
            return await upsert(data, *args, **kwargs)

        text_chunks.upsert = upsert_and_tell


def _document_callback() -> Any:
    """A RAG-Anything callback that sets ``current_document`` in the task dispatching a document's events."""
    from raganything.callbacks import ProcessingCallback

    class DocumentContext(ProcessingCallback):
        def on_parse_start(self, file_path: Any = None, doc_id: Optional[str] = None, **_: Any) -> None:
            current_document.set((doc_id, None if file_path is None else str(file_path)))

        def on_text_insert_start(self, file_path: Any = None, doc_id: Optional[str] = None, **_: Any) -> None:
            current_document.set((doc_id, None if file_path is None else str(file_path)))

    return DocumentContext()


def observation(rag: Any) -> Observation:
    """The rag's observation layer, installed on first use (which must come before LightRAG is created)."""
    existing: Optional[Observation] = getattr(rag, "ragopt_observation", None)
    if existing is not None:
        return existing
    if is_initialized(rag):
        raise RuntimeError("this RAGAnything is already initialized: observe it (ragopt.optimize, or a Recorder) "
                           "before its first ingestion or query, so its model calls can be seen")
    rag.ragopt_observation = Observation(rag)
    return rag.ragopt_observation
