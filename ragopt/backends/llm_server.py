"""The simulator behind an OpenAI-compatible HTTP API on loopback.

In-process calls skip the network; this server puts the real ``openai`` client
path (connection pool, retries, Retry-After handling) in the loop, against the
same simulator, slots and counters. It answers ``POST /v1/chat/completions``
(plain or streamed), ``POST /v1/embeddings`` (real MiniLM vectors) and
``GET /v1/models``, which names the chat model's owner
``ragopt-simulator``: a client that checks it labels its figures simulated,
and ``usage["ragopt"]`` carries the engine's plan for each call. Faults look as they would from a
real engine: 429 with Retry-After, 500, and for a timeout a request that hangs
for timeout_s and is then dropped without an answer (a client with a shorter
timeout of its own raises APITimeoutError, as against a stalled server).

``SimulatorServer`` runs it on a background thread (tests, notebooks);
``run_forever`` runs it in the foreground (``ragopt llm-sim serve``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any, Dict, Optional, Union

import openai
from aiohttp import web

from ragopt.backends import callinfo
from ragopt.backends.llm_sim import LLMSimulator, SimulatorConfig, split_messages

MODEL_ID = "ragopt-sim"
EMBEDDING_MODEL_ID = "all-MiniLM-L6-v2"  # a real model, not simulated: its vectors are MiniLM's
SIMULATOR_OWNER = "ragopt-simulator"  # /v1/models says so: clients label every figure made on it "simulated"
_SIM_KEY = web.AppKey("sim", LLMSimulator)


def _has_images(messages: list) -> bool:
    return any(
        isinstance(m.get("content"), list)
        and any(p.get("type") == "image_url" for p in m["content"])
        for m in messages
    )


def _error(status: int, message: str, kind: str, headers: Optional[Dict[str, str]] = None):
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status, headers=headers)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    sim = request.app[_SIM_KEY]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "request body is not JSON", "invalid_request_error")
    messages = body.get("messages") or []
    call: Dict[str, Any] = {}
    callinfo.current_call.set(call)  # this handler's own context: collects the usage numbers
    try:
        if _has_images(messages):
            text = await sim.vision("", messages=messages)
        else:
            system_prompt, history, prompt, _ = split_messages(messages)
            text = await sim.complete(prompt, system_prompt=system_prompt, history_messages=history)
    except openai.RateLimitError as exc:
        retry_after = {k: exc.response.headers[k] for k in ("retry-after", "retry-after-ms")}
        return _error(429, str(exc), "rate_limit_error", retry_after)
    except openai.InternalServerError as exc:
        return _error(500, str(exc), "server_error")
    except openai.APITimeoutError:
        # Hung for timeout_s, then dropped without an answer. Ending the handler
        # as cancelled is how aiohttp closes quietly on a connection it lost.
        request.transport.abort()
        raise asyncio.CancelledError

    completion = {
        "id": f"chatcmpl-sim-{uuid.uuid4().hex[:12]}",
        "created": int(time.time()),
        "model": body.get("model") or MODEL_ID,
    }
    usage = {
        "prompt_tokens": call.get("prompt_tokens", 0),
        "completion_tokens": call.get("completion_tokens", 0),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    # The engine's own numbers, so a client over HTTP gets the plan too (an extension field).
    usage["ragopt"] = {key: call[key] for key in ("kind", "queue_wait_ns", "service_ns", "planned_ns") if key in call}
    if body.get("stream"):
        return await _stream(request, completion, text, usage)
    return web.json_response({
        **completion,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": usage,
    })


async def _stream(request: web.Request, completion: dict, text: str, usage: dict):
    """Server-sent events in OpenAI's chunk format; the latency was spent before the first one."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)

    async def send(delta: dict, finish_reason: Optional[str] = None, **extra: Any) -> None:
        chunk = {**completion, "object": "chat.completion.chunk", **extra,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    pieces = text.split(" ")
    for i, piece in enumerate(pieces):
        await send({"content": piece if i == len(pieces) - 1 else piece + " "})
    await send({}, "stop", usage=usage)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _embeddings(request: web.Request) -> web.Response:
    """OpenAI's embeddings API over MiniLM (in its worker process), as floats or base64 float32."""
    import base64

    import numpy as np

    from ragopt.backends.embedding import embedding_worker, encode
    from ragopt.backends.tokenizer import count_tokens

    try:
        body = await request.json()
    except ValueError:
        return _error(400, "request body is not JSON", "invalid_request_error")
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else list(texts or [])
    if not texts or not all(isinstance(t, str) for t in texts):
        return _error(400, "input must be a string or a list of strings", "invalid_request_error")
    vectors = await asyncio.get_running_loop().run_in_executor(embedding_worker(), encode, texts)
    as_base64 = body.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() if as_base64 else [float(x) for x in v]}
            for i, v in enumerate(vectors)]
    tokens = sum(count_tokens(t) for t in texts)
    return web.json_response({"object": "list", "data": data, "model": body.get("model") or EMBEDDING_MODEL_ID,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def _models(request: web.Request) -> web.Response:
    return web.json_response({
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": SIMULATOR_OWNER, "simulated": True},
                 {"id": EMBEDDING_MODEL_ID, "object": "model", "created": 0, "owned_by": "ragopt"}],
    })


def make_app(sim: LLMSimulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)  # base64 images are large
    app[_SIM_KEY] = sim
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/embeddings", _embeddings)
    app.router.add_get("/v1/models", _models)
    return app


async def _start_site(sim: LLMSimulator, host: str, port: int) -> web.AppRunner:
    # handler_cancellation: a client that disconnects frees its slot, as in a real engine.
    # shutdown_timeout: stopping does not wait out requests that hang on purpose.
    runner = web.AppRunner(make_app(sim), handler_cancellation=True, access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def _bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]


class SimulatorServer:
    """The HTTP simulator on a background thread with its own event loop.

    ``with SimulatorServer(sim) as server: ... server.url`` (or ``async with``,
    or start()/stop()). ``url`` has no /v1 suffix; OpenAI clients take
    ``base_url=server.url + "/v1"``.
    """

    def __init__(self, sim: LLMSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SimulatorServer":
        """Bind and serve; returns once the port is known. Safe inside a running loop too."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failures = []

        def run() -> None:  # the loop lives and dies on this thread
            loop = asyncio.new_event_loop()
            try:
                self._runner = loop.run_until_complete(_start_site(self.sim, self.host, self.port))
                self.port, self._loop = _bound_port(self._runner), loop
            except BaseException as exc:  # reported to the caller of start()
                failures.append(exc)
            ready.set()
            if not failures:
                loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="ragopt-llm-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if failures:
            self._thread.join()
            self._thread = None
            raise failures[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = self._loop = self._runner = None

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "SimulatorServer":
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: Any) -> None:
        await asyncio.to_thread(self.stop)


def serve(sim: LLMSimulator, host: str = "127.0.0.1", port: int = 0) -> SimulatorServer:
    """Start the HTTP simulator in the background and return it (stop() it when done)."""
    return SimulatorServer(sim, host, port).start()


def run_forever(
    config: Union[SimulatorConfig, str, None] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Serve a fresh simulator in the foreground until interrupted (Ctrl-C).

    config is a SimulatorConfig or a preset name ("default", "hosted", "vllm", "fast").
    """
    if not isinstance(config, SimulatorConfig):
        config = SimulatorConfig.preset(config or "default")
    sim = LLMSimulator(config)

    async def main() -> None:
        runner = await _start_site(sim, host, port)
        print(f"Simulated LLM ({config}) on http://{host}:{_bound_port(runner)}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
