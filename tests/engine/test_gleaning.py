"""Gleaning priority in LightRAG's own LLM queue."""

import asyncio
from types import SimpleNamespace

from ragopt.engine.gleaning import prioritize_gleaning


def test_gleaning_jumps_ahead_of_queued_extraction_in_lightrags_llm_queue():
    from lightrag.utils import priority_limit_async_func_call

    served = []

    async def scenario():
        gate = asyncio.Event()

        async def llm(prompt, history_messages=None, **_):
            served.append(prompt)
            if prompt == "extract 0":
                await gate.wait()  # holds the only slot until everything else is queued
            return prompt

        lightrag = SimpleNamespace(llm_model_func=priority_limit_async_func_call(1, queue_name="test")(llm))
        prioritize_gleaning(lightrag)
        first = asyncio.ensure_future(lightrag.llm_model_func("extract 0"))
        while served != ["extract 0"]:
            await asyncio.sleep(0)
        calls = [asyncio.ensure_future(lightrag.llm_model_func(f"extract {i}")) for i in (1, 2, 3)]
        calls.append(asyncio.ensure_future(lightrag.llm_model_func("glean 0", history_messages=[{"role": "user", "content": "x"}])))
        for _ in range(20):  # every call is in LightRAG's queue (no clock involved)
            await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *calls)
        await lightrag.llm_model_func.shutdown()  # still LightRAG's queue underneath

    asyncio.run(scenario())
    assert served == ["extract 0", "glean 0", "extract 1", "extract 2", "extract 3"]
