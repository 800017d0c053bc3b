"""The simulated LLM service: slots, latency, determinism, faults, valid answers, HTTP."""

import asyncio
import inspect
import json
import threading

import httpx
import json_repair
import openai
import pytest
from lightrag.constants import DEFAULT_ENTITY_TYPES
from lightrag.llm.openai import openai_complete_if_cache
from lightrag.operate import _process_extraction_result
from lightrag.prompt import PROMPTS
from lightrag.types import GPTKeywordExtractionFormat
from raganything.modalprocessors import (
    EquationModalProcessor,
    ImageModalProcessor,
    TableModalProcessor,
)
from raganything.prompt import PROMPTS as RAG_PROMPTS

from ragopt.backends import callinfo
from ragopt.backends.llm_server import SimulatorServer
from ragopt.backends.llm_sim import LLMSimulator, ManualClock, SimulatorConfig, llm_func, vision_func

PARAGRAPH = (
    "The European Space Agency launched the Sentinel-6 satellite from Vandenberg Space Force "
    "Base in California on Saturday. The mission, built jointly with NASA and the National "
    "Oceanic and Atmospheric Administration, will measure sea level with a radar altimeter.\n"
    "Josef Aschbacher, director general of the European Space Agency, said the satellite would "
    "extend a climate record that began in 1992. Sea level measurements from the radar "
    "altimeter feed climate models used by NASA and by forecasters in Europe.\n"
    "The satellite carries a microwave radiometer that corrects the altimeter for water vapour. "
    "Engineers at Airbus Defence and Space in Friedrichshafen assembled the satellite."
)


def fast(**overrides):
    return LLMSimulator(SimulatorConfig.preset("fast", **overrides))


def extraction_prompts(text, entity_types=DEFAULT_ENTITY_TYPES):
    """System, user and gleaning prompts as lightrag.operate.extract_entities builds them."""
    base = dict(
        tuple_delimiter=PROMPTS["DEFAULT_TUPLE_DELIMITER"],
        completion_delimiter=PROMPTS["DEFAULT_COMPLETION_DELIMITER"],
        language="English",
    )
    examples = "\n".join(PROMPTS["entity_extraction_examples"]).format(
        **base, entity_types=", ".join(entity_types)
    )
    context = dict(base, entity_types=",".join(entity_types), examples=examples)
    return (
        PROMPTS["entity_extraction_system_prompt"].format(**context),
        PROMPTS["entity_extraction_user_prompt"].format(**context, input_text=text),
        PROMPTS["entity_continue_extraction_user_prompt"].format(**context, input_text=text),
    )


async def parse_extraction(answer):
    return await _process_extraction_result(answer, "chunk-1", 0)


# ------------------------------------------------------------------ config


def test_presets_and_validation():
    assert SimulatorConfig.preset("vllm").slots == 64
    assert SimulatorConfig.preset("hosted", slots=2).slots == 2
    with pytest.raises(ValueError, match="unknown simulator preset"):
        SimulatorConfig.preset("gpt-9")
    with pytest.raises(ValueError, match="slots"):
        SimulatorConfig(slots=0)
    with pytest.raises(ValueError, match="jitter"):
        SimulatorConfig(jitter=1.5)
    with pytest.raises(ValueError, match="add up"):
        SimulatorConfig(rate_429=0.6, rate_5xx=0.6)


# ------------------------------------------------------------ slots, latency


async def test_k_slots_bound_in_flight_and_queue_the_rest():
    sim = fast()
    k = sim.config.slots
    await asyncio.gather(*(sim.complete(f"question number {i}") for i in range(3 * k)))
    counters = sim.counters()
    assert counters["calls"] == 3 * k
    assert counters["max_in_flight"] == k
    assert counters["queue_wait_s"] > 0
    assert counters["busy_s"] == pytest.approx(sim.calls_frame()["service_s"].sum())
    assert counters["planned_s"] == pytest.approx(sim.calls_frame()["planned_s"].sum())
    assert sim.lower_limit_s() == pytest.approx(counters["planned_s"] / k)


async def _until(condition):
    """Wait, without a deadline of our own, until the engine's thread has done its part."""
    while not condition():
        await asyncio.sleep(0.001)


async def test_slots_free_at_the_planned_end_while_the_callers_loop_is_blocked():
    """A serving engine frees a slot when generation ends, whether or not the client has read the answer."""
    clock = ManualClock()
    sim = LLMSimulator(SimulatorConfig(slots=8, ttft_s=1.0, tpot_s=0.0, jitter=0.0), clock=clock)
    requests = [asyncio.create_task(sim.complete(f"question {i}")) for i in range(9)]
    await _until(lambda: sim.in_flight == 8 and len(sim.calls_frame()) == 0)
    await asyncio.sleep(0.05)  # the 9th request reaches the engine's queue
    # The caller's loop is blocked (a long merge, a flush) well past the 8 requests' planned end:
    # nothing on it runs while the engine's clock moves on 1.5 s.
    clock.advance(1.5)
    frame = sim.calls_frame()
    assert len(frame) == 8 and (frame["granted"] == 0.0).all() and (frame["end"] == 1.0).all()
    assert sim.in_flight == 1  # the 9th was granted at the first release, on the engine's own time
    clock.advance(1.0)
    await asyncio.gather(*requests)
    frame = sim.calls_frame().sort_values("granted")
    ninth = frame.iloc[-1]
    assert (ninth["granted"], ninth["end"]) == (1.0, 2.0)
    assert list(frame["service_s"]) == [1.0] * 9
    assert sim.lower_limit_s() == 9 * 1.0 / 8  # the plan: unchanged by the caller's stall


def test_slots_are_shared_across_threads_and_event_loops():
    sim = fast(slots=3)

    def run_batch(tag):
        async def batch():
            await asyncio.gather(*(sim.complete(f"{tag} {i}") for i in range(8)))

        asyncio.run(batch())

    threads = [threading.Thread(target=run_batch, args=(t,)) for t in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run_batch("after")  # a fresh loop in the main thread still gets slots
    counters = sim.counters()
    assert counters["calls"] == 24
    assert counters["max_in_flight"] == 3


async def test_a_cancelled_waiter_gives_its_place_back():
    sim = fast(slots=1, ttft_s=0.05)
    holder = asyncio.create_task(sim.complete("first"))
    waiter = asyncio.create_task(sim.complete("second"))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await holder
    assert await asyncio.wait_for(sim.complete("third"), timeout=1) is not None
    assert sim.counters()["max_in_flight"] == 1


async def test_latency_follows_ttft_plus_tokens_times_tpot():
    sim = fast(jitter=0.0, tpot_s=0.0005)
    system_prompt, user_prompt, _ = extraction_prompts(PARAGRAPH)
    await sim.complete(user_prompt, system_prompt=system_prompt)
    await sim.complete("a short question")
    frame = sim.calls_frame()
    expected = sim.config.ttft_s + frame["completion_tokens"] * sim.config.tpot_s
    assert frame["completion_tokens"].iloc[0] > 200  # an extraction answer is long
    assert list(frame["planned_s"]) == pytest.approx(list(expected))
    # The measured slot time is the planned one plus event-loop overhead only.
    assert (frame["service_s"] >= expected - 1e-3).all()
    assert (frame["service_s"] <= expected * 1.1 + 0.05).all()


async def test_same_prompt_same_answer_and_time_whatever_the_order():
    prompts = [f"tell me about item {i}" for i in range(6)] + [extraction_prompts(PARAGRAPH)[1]]
    one, two = fast(), fast()
    answers_one = [await one.complete(p) for p in prompts]
    answers_two = await asyncio.gather(*(two.complete(p) for p in reversed(prompts)))
    assert answers_one == answers_two[::-1]
    planned_one = sorted(one.calls_frame()["planned_s"])
    assert planned_one == sorted(two.calls_frame()["planned_s"])
    assert len(set(planned_one)) == len(prompts)  # the jitter differs from prompt to prompt
    other_seed = fast(seed=1)
    for prompt in prompts:
        await other_seed.complete(prompt)
    assert sorted(other_seed.calls_frame()["planned_s"]) != planned_one


async def test_more_input_text_gives_a_longer_extraction_answer():
    sim = fast()
    short = await sim.complete(extraction_prompts(PARAGRAPH.split("\n")[0])[1])
    long = await sim.complete(extraction_prompts(PARAGRAPH)[1])
    tokens = list(sim.calls_frame()["completion_tokens"])
    assert len(long) > len(short) and tokens[1] > tokens[0]


# ------------------------------------------------------------------ faults


async def test_rate_limit_at_rate_one_raises_with_retry_after():
    sim = fast(rate_429=1.0, retry_after_s=2)
    with pytest.raises(openai.RateLimitError) as caught:
        await sim.complete("anything")
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    counters = sim.counters()
    assert counters["calls_by_outcome"] == {"429": 1}
    assert counters["busy_ns"] == 0 and counters["max_in_flight"] == 0  # no slot held


async def test_timeout_holds_the_slot_then_raises_and_5xx_raises():
    sim = fast(rate_timeout=1.0, timeout_s=0.05)
    with pytest.raises(openai.APITimeoutError):
        await sim.complete("anything")
    assert sim.counters()["busy_s"] >= 0.05
    with pytest.raises(openai.InternalServerError) as caught:
        await fast(rate_5xx=1.0).complete("anything")
    assert caught.value.status_code == 500


async def test_fault_rate_gives_that_share_and_a_retry_can_succeed():
    sim = fast(rate_429=0.2, ttft_s=0.0, tpot_s=0.0)
    failed = []
    for i in range(200):
        try:
            await sim.complete(f"request {i}")
        except openai.RateLimitError:
            failed.append(f"request {i}")
    assert 0.12 <= len(failed) / 200 <= 0.28
    retried = []
    for prompt in failed:
        for _ in range(10):
            try:
                retried.append(await sim.complete(prompt))
                break
            except openai.RateLimitError:
                continue
    assert len(retried) == len(failed)
    sim.reset()  # the same fault pattern replays after a reset
    with pytest.raises(openai.RateLimitError):
        await sim.complete(failed[0])


# ------------------------------------------------------------ valid answers


async def test_extraction_answer_parses_with_lightrag():
    sim = fast()
    func = llm_func(sim)
    types = ["Person", "Organization", "Location", "Concept"]
    system_prompt, user_prompt, glean_prompt = extraction_prompts(PARAGRAPH, types)
    answer = await func(user_prompt, system_prompt=system_prompt, hashing_kv=None, _priority=8)
    nodes, edges = await parse_extraction(answer)
    assert len(nodes) >= 3 and len(edges) >= 2
    assert {n[0]["entity_type"] for n in nodes.values()} <= {t.lower() for t in types}
    assert {"European Space Agency", "NASA"} <= set(nodes)  # the most mentioned names
    assert all(src in nodes and tgt in nodes for src, tgt in edges)

    history = [{"role": "user", "content": user_prompt}, {"role": "assistant", "content": answer}]
    glean = await func(glean_prompt, system_prompt=system_prompt, history_messages=history)
    glean_nodes, _ = await parse_extraction(glean)
    assert glean_nodes and not set(glean_nodes) & set(nodes)  # only what was missed
    assert sim.counters()["calls_by_kind"] == {"extract": 1, "glean": 1}


async def test_keywords_answer_is_the_json_lightrag_expects():
    prompt = PROMPTS["keywords_extraction"].format(
        query="How does the European Space Agency measure sea level rise with Sentinel-6?",
        examples="\n".join(PROMPTS["keywords_extraction_examples"]),
        language="English",
    )
    answer = await llm_func(fast())(prompt, keyword_extraction=True)
    parsed = GPTKeywordExtractionFormat.model_validate(json_repair.loads(answer))
    assert parsed.high_level_keywords and "European Space Agency" in parsed.low_level_keywords


async def test_summary_is_shorter_and_names_the_entity():
    descriptions = [f"NASA worked on mission {i}. More detail number {i}." for i in range(6)]
    prompt = PROMPTS["summarize_entity_descriptions"].format(
        description_type="Entity",
        description_name="NASA",
        description_list="\n".join(json.dumps({"Description": d}) for d in descriptions),
        summary_length=500,
        language="English",
    )
    sim = fast()
    summary = await sim.complete(prompt)
    assert summary.startswith("NASA") and "mission 5" in summary
    assert len(summary) < len(" ".join(descriptions))
    assert sim.counters()["calls_by_kind"] == {"summary": 1}


async def test_query_answer_cites_the_context():
    context = PROMPTS["kg_query_context"].format(
        entities_str=json.dumps({"entity": "NASA", "description": "NASA built Sentinel-6."}),
        relations_str="",
        text_chunks_str=json.dumps(
            {"reference_id": "1", "content": "Sentinel-6 measures sea level with an altimeter."}
        ),
        reference_list_str="[1] sentinel.pdf",
    )
    system_prompt = PROMPTS["rag_response"].format(
        response_type="Multiple Paragraphs", user_prompt="n/a", context_data=context
    )
    answer = await llm_func(fast())(
        "How does Sentinel-6 measure sea level?", system_prompt=system_prompt,
        enable_cot=True, stream=False,
    )
    assert "altimeter" in answer and "[1] sentinel.pdf" in answer


def _bare(processor_class):
    """A modal processor without LightRAG behind it: enough to call its response parser."""
    return object.__new__(processor_class)


async def test_raganything_table_equation_and_image_answers_parse():
    sim = fast()
    table_prompt = RAG_PROMPTS["table_prompt"].format(
        entity_name="descriptive name for this table",
        table_img_path="images/t2.png",
        table_caption=["Table 2: Language adoption"],
        table_body="| Language | Teams |\n|---|---|\n| Python | 40 |\n| Rust | 9 |",
        table_footnote="None",
    )
    answer = await sim.complete(table_prompt, system_prompt=RAG_PROMPTS["TABLE_ANALYSIS_SYSTEM"])
    description, entity = _bare(TableModalProcessor)._parse_table_response(answer)
    assert entity["entity_name"] == "Table 2: Language adoption (table)"
    assert "Python" in description

    equation_prompt = RAG_PROMPTS["equation_prompt"].format(
        equation_text=r"T = \frac{B}{K}", equation_format="latex",
        entity_name="descriptive name for this equation",
    )
    answer = await sim.complete(equation_prompt)
    description, entity = _bare(EquationModalProcessor)._parse_equation_response(answer)
    assert entity["entity_type"] == "equation" and r"\frac" in description

    image_prompt = RAG_PROMPTS["vision_prompt"].format(
        section_path="2 Results", entity_name="unique descriptive name for this image",
        image_path="/data/fig_3.png", captions=["Figure 3: Throughput"], footnotes="None",
    )
    answer = await vision_func(sim)(image_prompt, image_data="aGVsbG8=",
                                    system_prompt=RAG_PROMPTS["IMAGE_ANALYSIS_SYSTEM"])
    description, entity = _bare(ImageModalProcessor)._parse_response(answer)
    assert entity["entity_name"] == "Figure 3: Throughput (image)"
    assert sim.counters()["calls_by_kind"] == {"table": 1, "equation": 1, "image": 1}


async def test_vision_accepts_openai_multimodal_messages():
    sim = fast()
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [
            {"type": "text", "text": "Context: Sentinel-6 measures sea level."},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
            {"type": "text", "text": "User Question: What does Sentinel-6 measure?"},
        ]},
    ]
    answer = await vision_func(sim)("", messages=messages)
    assert "sea level" in answer
    assert sim.counters()["calls_by_kind"] == {"query": 1}


async def test_unknown_prompt_gets_a_short_generic_answer():
    sim = fast()
    assert len(await sim.complete("hello there")) < 100
    assert sim.counters()["calls_by_kind"] == {"other": 1}


# ---------------------------------------------------------- what callers see


async def test_callinfo_reports_the_simulators_own_numbers():
    sim = fast()
    info = {}
    token = callinfo.current_call.set(info)
    try:
        await llm_func(sim)(extraction_prompts(PARAGRAPH)[1])
    finally:
        callinfo.current_call.reset(token)
    row = sim.calls_frame().iloc[0]
    assert info["kind"] == "extract" and info["outcome"] == "ok"
    assert info["service_ns"] / 1e9 == pytest.approx(row["service_s"])
    assert info["planned_ns"] / 1e9 == pytest.approx(row["planned_s"])
    assert info["queue_wait_ns"] / 1e9 == pytest.approx(row["queue_wait_s"])
    assert info["prompt_tokens"] == row["prompt_tokens"] > 0
    assert info["completion_tokens"] == row["completion_tokens"] > 0


def _lightrag_with(llm, tmp_path):
    import numpy as np
    from lightrag import LightRAG
    from lightrag.utils import EmbeddingFunc

    from ragopt.backends.tokenizer import offline_tokenizer

    async def embed(texts):
        return np.zeros((len(texts), 8), dtype=np.float32)

    return LightRAG(working_dir=str(tmp_path), llm_model_func=llm, tokenizer=offline_tokenizer(),
                    embedding_func=EmbeddingFunc(embedding_dim=8, max_token_size=256, func=embed))


def test_model_functions_are_plain_closures_lightrag_can_copy(tmp_path):
    """LightRAG deep-copies its settings (dataclasses.asdict) and wraps the function in its queue:
    the simulator's functions survive both and reach the simulator; an object holding a lock does not."""
    sim = fast()
    for name, func in (("llm", llm_func(sim)), ("vision", vision_func(sim))):
        assert inspect.iscoroutinefunction(func)
        lightrag = _lightrag_with(func, tmp_path / name)

        async def call():
            try:
                return await lightrag.llm_model_func("hello there")
            finally:
                await lightrag.llm_model_func.shutdown()

        assert "hello there" in asyncio.run(call())
    assert sim.counters()["calls"] == 2

    class HoldsALock:
        def __init__(self):
            self.lock = threading.Lock()

        async def __call__(self, prompt, **kwargs):
            return prompt

    with pytest.raises(TypeError, match="pickle"):
        _lightrag_with(HoldsALock(), tmp_path / "object")


async def test_reset_clears_the_counters():
    sim = fast()
    await sim.complete("one")
    sim.reset()
    assert sim.counters()["calls"] == 0 and sim.calls_frame().empty and sim.lower_limit_s() == 0


# ------------------------------------------------------------------- HTTP


async def test_lightrag_openai_binding_talks_to_the_http_simulator():
    sim = fast()
    system_prompt, user_prompt, _ = extraction_prompts(PARAGRAPH)
    async with SimulatorServer(sim) as server:
        answer = await openai_complete_if_cache(
            "ragopt-sim", user_prompt, system_prompt=system_prompt,
            base_url=server.url + "/v1", api_key="sim",
        )
        keywords = await openai_complete_if_cache(
            "ragopt-sim",
            PROMPTS["keywords_extraction"].format(query="What did NASA build?", examples="",
                                                  language="English"),
            keyword_extraction=True, base_url=server.url + "/v1", api_key="sim",
        )
    nodes, edges = await parse_extraction(answer)
    assert nodes and edges
    assert json.loads(keywords)["low_level_keywords"]
    assert answer == await fast().complete(user_prompt, system_prompt=system_prompt)
    assert sim.counters()["calls_by_kind"] == {"extract": 1, "keywords": 1}


async def test_http_streaming_gives_the_same_answer():
    sim = fast()
    async with SimulatorServer(sim) as server:
        client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sim")
        stream = await client.chat.completions.create(
            model="ragopt-sim", stream=True,
            messages=[{"role": "user", "content": "tell me about NASA"}],
        )
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
    assert streamed == await fast().complete("tell me about NASA")


def test_http_429_carries_retry_after_and_timeouts_hang():
    with SimulatorServer(fast(rate_429=1.0, retry_after_s=3)) as server:
        response = httpx.post(server.url + "/v1/chat/completions",
                              json={"messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 429 and response.headers["Retry-After"] == "3"
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sim", max_retries=0)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="ragopt-sim",
                                           messages=[{"role": "user", "content": "hi"}])

    sim = fast(rate_timeout=1.0, timeout_s=0.3)
    with SimulatorServer(sim) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="sim", max_retries=0,
                               timeout=0.1)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="ragopt-sim",
                                           messages=[{"role": "user", "content": "hi"}])
        response_or_error = None
        try:  # a patient client sees the hung request dropped, not answered
            httpx.post(server.url + "/v1/chat/completions", timeout=5,
                       json={"messages": [{"role": "user", "content": "hi again"}]})
        except httpx.RemoteProtocolError as exc:
            response_or_error = exc
        assert isinstance(response_or_error, httpx.RemoteProtocolError)
    assert sim.counters()["calls_by_outcome"] == {"timeout": 2}
