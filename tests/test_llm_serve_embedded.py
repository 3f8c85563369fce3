"""The openai backend against a REAL OpenAI-compatible server: `transformers serve` on the embedded
model folder (offline, a subprocess on 127.0.0.1). Slow: it loads the 135M model in its own process."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from kardia.llm import SamplingParams, load_llm
from kardia.llm.openai_backend import OpenAILLM
from kardia.testing.transformers_serve import TransformersServe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(embedded_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    with TransformersServe(embedded_path, log_path=log, startup_timeout_s=90) as srv:
        yield embedded_path, srv.base_url


def test_models_endpoint_names_the_folder(served):
    model, base_url = served
    ids = [m["id"] for m in httpx.get(base_url + "/models", timeout=10).json()["data"]]
    assert model in ids


def test_sync_completion_through_load_llm(served):
    model, base_url = served
    llm = load_llm(f"openai:{model}@{base_url}", cache=False, timeout_s=60, max_retries=1)
    assert isinstance(llm, OpenAILLM)
    c = llm.chat([{"role": "user", "content": "Say hello."}], SamplingParams(max_tokens=8, temperature=0))
    assert c.text.strip() and c.completion_tokens > 0 and c.finish_reason in ("stop", "length")
    assert llm.stats["retries"] == 0


def test_async_completions_at_concurrency_4(served):
    model, base_url = served
    llm = load_llm(f"openai:{model}@{base_url}", cache=False, timeout_s=60, max_retries=1, max_concurrency=4)
    prompts = ["Hi.", "I feel sad today.", "What is a cat?", "Name a colour."]

    async def main():
        try:
            return await llm.agenerate(
                [[{"role": "user", "content": p}] for p in prompts], SamplingParams(max_tokens=6, temperature=0)
            )
        finally:
            await llm.aclose()

    out = asyncio.run(main())
    assert len(out) == 4 and all(c.text.strip() for c in out)
    assert llm.stats["succeeded"] >= 4 and llm.stats["failed"] == 0


def test_greedy_answer_matches_the_local_backend(served):
    """Same weights, same chat template, greedy: the server and the in-process backend agree."""
    model, base_url = served
    remote = load_llm(f"openai:{model}@{base_url}", cache=False, timeout_s=60, max_retries=1)
    local = load_llm("embedded", cache=False)
    msgs = [{"role": "user", "content": "I lost my job today. What should I do?"}]
    params = SamplingParams(max_tokens=8, temperature=0)
    r, l = remote.chat(msgs, params), local.chat(msgs, params)
    assert r.text.split()[:4] == l.text.split()[:4], (r.text, l.text)
