"""The openai backend over real HTTP (lean pooled httpx client) against the FAKE fault-injecting server.

Every test uses tiny timeouts and backoff so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from kardia.llm import LLMError, SamplingParams, load_llm
from kardia.llm.openai_backend import OpenAILLM

FAST = dict(timeout_s=0.3, backoff_s=0.001, max_backoff_s=0.01)
P = SamplingParams(max_tokens=16, temperature=0.0)


def conv(i: int | str) -> list[dict]:
    return [{"role": "system", "content": "be kind"}, {"role": "user", "content": f"msg-{i}"}]


def backend(*servers, **options) -> OpenAILLM:
    return OpenAILLM("fake-model", [s.base_url for s in servers], **{**FAST, **options})


def test_plain_round_trip_and_request_body(fake_server):
    server = fake_server(record_bodies=True)
    llm = backend(server)
    params = SamplingParams(max_tokens=7, temperature=0.3, top_p=0.9, seed=5, stop=["\n"])
    [c] = llm.generate([conv(1)], params)
    assert c.text == "echo: msg-1" and c.finish_reason == "stop" and not c.cached
    assert c.completion_tokens == 2 and c.prompt_tokens == 3
    body = server.stats.bodies[0]
    assert body["model"] == "fake-model" and body["messages"] == conv(1)
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["stop"]) == (7, 0.3, 0.9, 5, ["\n"])
    assert llm.stats == {"attempts": 1, "retries": 0, "succeeded": 1, "failed": 0}


@pytest.mark.parametrize("fault", ["500", "502", "503", "408", "badjson", "drop", "hang"])
def test_each_retryable_fault_recovers_on_retry(fake_server, fault):
    server = fake_server(faults={1: fault}, hang_s=5.0)
    llm = backend(server, max_retries=2)
    t0 = time.monotonic()
    [c] = llm.generate([conv("x")], P)
    elapsed = time.monotonic() - t0
    assert c.text == "echo: msg-x"
    assert server.stats.requests == 2 and server.stats.completed == 1
    assert llm.stats == {"attempts": 2, "retries": 1, "succeeded": 1, "failed": 0}
    if fault == "hang":
        assert 0.28 <= elapsed < 2.0  # the per-call timeout fired, not the server's 5 s hang


def test_429_retry_after_is_honoured(fake_server):
    server = fake_server(faults={1: "429"}, retry_after_s=0.4)
    llm = backend(server, max_retries=2)
    [c] = llm.generate([conv(1)], P)
    gap = server.stats.arrivals[1] - server.stats.arrivals[0]
    assert c.text == "echo: msg-1"
    assert 0.38 <= gap < 1.5, gap  # backoff alone would wait ~1 ms


@pytest.mark.parametrize("status", ["400", "401", "404", "422"])
def test_4xx_is_not_retried(fake_server, status):
    server = fake_server(faults={1: status})
    llm = backend(server, max_retries=5)
    with pytest.raises(LLMError, match=f"HTTP {status}"):
        llm.generate([conv(1)], P)
    assert server.stats.requests == 1
    assert llm.stats == {"attempts": 1, "retries": 0, "succeeded": 0, "failed": 1}


def test_retries_are_bounded_and_the_error_is_explicit(fake_server):
    server = fake_server(faults=lambda n, body: "500")
    llm = backend(server, max_retries=3)
    with pytest.raises(LLMError, match=r"gave up after 4 attempts.*InternalServerError"):
        llm.generate([conv(1)], P)
    assert server.stats.requests == 4 and server.stats.completed == 0


def test_dead_url_costs_one_attempt_not_all(fake_server):
    """A retry moves on to the next URL: one dead server of two still answers every request."""
    server = fake_server()
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    # a refused connection fails at once; a generous timeout so a slow live answer on a loaded machine
    # (past FAST's 0.3 s) cannot spend the one retry on the dead URL
    llm = OpenAILLM("fake-model", [dead, server.base_url], **{**FAST, "timeout_s": 10.0}, max_retries=1)
    out = llm.generate([conv(i) for i in range(6)], P)
    assert [c.text for c in out] == [f"echo: msg-{i}" for i in range(6)]


def test_several_base_urls_share_the_load(fake_server):
    a, b = fake_server(), fake_server()
    llm = load_llm(f"openai:fake-model@{a.base_url},{b.base_url}", cache=False, **FAST)
    out = llm.generate([conv(i) for i in range(20)], P)
    assert [c.text for c in out] == [f"echo: msg-{i}" for i in range(20)]
    assert a.stats.completed == 10 and b.stats.completed == 10


def test_bounded_concurrency(fake_server):
    server = fake_server(latency_s=0.1)
    llm = backend(server, max_concurrency=3)
    t0 = time.monotonic()
    out = llm.generate([conv(i) for i in range(12)], P)
    assert len(out) == 12
    assert server.stats.max_in_flight == 3  # the bound is used, and never exceeded
    assert time.monotonic() - t0 >= 0.38  # 12 requests / 3 at a time * 0.1 s


def test_requests_per_minute_limit_spaces_request_starts(fake_server):
    server = fake_server()
    llm = backend(server, rpm=600)  # one start per 0.1 s
    t0 = time.monotonic()
    out = llm.generate([conv(i) for i in range(6)], P)
    assert len(out) == 6
    assert time.monotonic() - t0 >= 0.5  # 6 starts, 0.1 s apart
    gaps = [b - a for a, b in zip(server.stats.arrivals, server.stats.arrivals[1:])]
    assert min(gaps) >= 0.03, gaps  # server-side arrival times jitter a little under load


def test_batch_with_faults_loses_and_duplicates_nothing(fake_server):
    """N requests with injected faults: each returns its own completion or raises LLMError; the two
    servers' request counts equal completions + retries + final failures exactly."""
    n = 40
    plan = {2: "500", 3: "429", 5: "hang", 7: "badjson", 11: "drop", 13: "503", 17: "500", 19: "drop", 23: "badjson"}

    def faults_a(k, body):
        if body["messages"][-1]["content"] == "msg-doomed":
            return "500"
        return plan.get(k)

    def faults_b(k, body):
        if body["messages"][-1]["content"] == "msg-doomed":
            return "502"
        return {1: "hang", 4: "429", 6: "500", 9: "drop"}.get(k)

    a = fake_server(faults=faults_a, retry_after_s=0.01, hang_s=5.0)
    b = fake_server(faults=faults_b, retry_after_s=0.01, hang_s=5.0)
    llm = backend(a, b, max_retries=3, max_concurrency=8)

    async def main():
        tasks = [llm.achat(conv(i), P) for i in range(n)] + [llm.achat(conv("doomed"), P)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    t0 = time.monotonic()
    results = asyncio.run(main())
    assert time.monotonic() - t0 < 10
    ok = [r for r in results if not isinstance(r, BaseException)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, LLMError) for e in errors), errors
    # the doomed one fails for good, after exactly max_retries + 1 attempts; every other one completes
    assert len(errors) == 1 and "gave up after 4 attempts" in str(errors[0])
    assert [r.text for r in results[:n]] == [f"echo: msg-{i}" for i in range(n)]
    served = a.stats.requests + b.stats.requests
    assert a.stats.completed + b.stats.completed == len(ok) == n
    assert served == llm.stats["attempts"] == len(ok) + llm.stats["retries"] + llm.stats["failed"]
    assert llm.stats["failed"] == 1
    assert llm.stats["retries"] == sum(a.stats.faults.values()) + sum(b.stats.faults.values()) - 1
    assert a.stats.requests > 0 and b.stats.requests > 0


def test_sync_wrapper_works_inside_a_running_loop(fake_server):
    """`generate` called from async code (e.g. a notebook) runs on its own loop in a thread."""
    server = fake_server()
    llm = backend(server)

    async def main():
        return llm.chat(conv(1), P)

    assert asyncio.run(main()).text == "echo: msg-1"
    # and the per-loop clients of finished loops are released
    import gc

    gc.collect()
    assert len(llm._per_loop) == 0


def test_load_llm_shares_one_backend_per_model_string(fake_server, tmp_path):
    server = fake_server()
    s = server.model_string()
    assert load_llm(s, cache=tmp_path / "c.sqlite") is load_llm(s, cache=tmp_path / "c.sqlite")
    first = load_llm(s, cache=tmp_path / "c.sqlite")
    assert first.chat(conv(1), P).cached is False
    assert first.chat(conv(1), P).cached is True
    assert server.stats.requests == 1
