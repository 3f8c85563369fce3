"""The local backend on the embedded model (real transformers generate, real tokenizer).

Loads SmolLM2-135M once per module; keep max_tokens small, every token costs ~70 ms on 2 cores.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kardia.llm import LLMError, SamplingParams, load_llm
from kardia.llm.cache import CachedLLM
from kardia.llm.local import LocalLLM
from kardia.llm.types import Completion

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


def conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


PROMPTS = [
    "Hi.",
    "I lost my job today and I feel terrible. What should I do?",
    "My dog died last week and the house feels empty.",
    "Tell me something nice.",
]


@pytest.fixture(scope="module")
def llm(embedded_path) -> LocalLLM:
    inst = load_llm("embedded", cache=False)
    assert isinstance(inst, LocalLLM)
    inst.load()
    return inst


def test_load_llm_shares_one_local_model_between_roles(llm, embedded_path, tmp_path):
    assert load_llm("embedded", cache=False) is llm
    assert load_llm(embedded_path, cache=False) is llm  # the folder path names the same model
    cached = load_llm("embedded", cache=tmp_path / "c.sqlite")
    assert isinstance(cached, CachedLLM) and cached.inner is llm
    other = load_llm("embedded", cache=False, max_batch=4)  # different options: its own instance
    assert other is not llm


def test_greedy_is_deterministic_and_batched_matches_single(llm):
    singles = [llm.chat(conv(p), GREEDY) for p in PROMPTS]
    assert llm.chat(conv(PROMPTS[1]), GREEDY).text == singles[1].text
    before = llm.batches_run
    batched = llm.generate([conv(p) for p in PROMPTS], GREEDY)
    assert llm.batches_run == before + 1 and llm.batch_sizes[-1] == len(PROMPTS)
    for s, b in zip(singles, batched):
        # left padding changes float rounding, not (at least) the first tokens
        assert s.text.split()[:3] == b.text.split()[:3], (s.text, b.text)
        assert s.prompt_tokens == b.prompt_tokens
    assert len({c.prompt_tokens for c in batched}) > 1  # the batch really needed padding


def test_finish_reason_length_vs_stop(llm):
    c = llm.chat(conv(PROMPTS[1]), SamplingParams(max_tokens=5, temperature=0))
    assert c.finish_reason == "length" and c.completion_tokens == 5 and c.text
    c = llm.chat(conv("Answer with one word: what colour is the sky on a clear day?"), SamplingParams(max_tokens=24, temperature=0))
    assert c.finish_reason == "stop" and c.completion_tokens < 24, c  # ended by <|im_end|>


def test_stop_strings_are_honoured_and_cut(llm):
    full = llm.chat(conv(PROMPTS[1]), SamplingParams(max_tokens=12, temperature=0))
    words = full.text.split()
    stop = " " + words[3]
    cut = llm.chat(conv(PROMPTS[1]), SamplingParams(max_tokens=12, temperature=0, stop=[stop, "@@never@@"]))
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)].strip()
    assert stop not in cut.text
    assert cut.completion_tokens < full.completion_tokens  # generation stopped, not just the text cut


def test_concurrent_async_callers_share_one_generate_call(llm):
    async def main():
        return await asyncio.gather(*(llm.achat(conv(p), GREEDY) for p in PROMPTS * 2))

    before = llm.batches_run
    out = asyncio.run(main())
    assert len(out) == 8 and all(isinstance(c, Completion) and c.text for c in out)
    assert llm.batches_run == before + 1 and llm.batch_sizes[-1] == 8
    assert out[0].text == out[4].text


def test_concurrent_threads_are_batched_together(llm):
    results: dict[int, Completion] = {}
    barrier = threading.Barrier(6)

    def call(i):
        barrier.wait()
        results[i] = llm.generate([conv(PROMPTS[i % 4])], GREEDY)[0]

    before = llm.batches_run
    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(6))
    assert llm.batches_run - before <= 2  # six callers, at most two generate calls
    assert results[0].text == results[4].text


def test_mixed_params_split_by_length_and_stop_but_mix_sampling(embedded_path):
    # float32: under bf16 autocast (chosen by a timing probe, so it varies with the machine's load) a padded
    # batch rounds differently from a lone row and a sampled token can flip
    llm = LocalLLM(str(embedded_path), dtype="float32")
    llm.load()

    async def main():
        return await asyncio.gather(
            llm.achat(conv(PROMPTS[0]), SamplingParams(max_tokens=4, temperature=0)),
            llm.achat(conv(PROMPTS[1]), SamplingParams(max_tokens=6, temperature=0)),
            llm.achat(conv(PROMPTS[2]), SamplingParams(max_tokens=4, temperature=0, stop=["\n"])),
            llm.achat(conv(PROMPTS[3]), SamplingParams(max_tokens=4, temperature=0.9, seed=7)),
            llm.achat(conv(PROMPTS[3]), SamplingParams(max_tokens=4, temperature=0.9, seed=7)),
        )

    before = llm.batches_run
    out = asyncio.run(main())
    sizes = sorted(llm.batch_sizes[before:])
    assert sizes == [1, 1, 3], sizes  # (4 tokens: greedy + two seeded), (6 tokens), (stop list)
    assert out[3].text == out[4].text  # same seed, same draw, even side by side in one batch
    # a seeded row draws from its own generator: batch company does not change its text
    alone = llm.chat(conv(PROMPTS[3]), SamplingParams(max_tokens=4, temperature=0.9, seed=7))
    assert alone.text == out[3].text


def test_sampling_differs_across_seeds(llm):
    texts = {
        llm.chat(conv("Invent a name for a cat."), SamplingParams(max_tokens=6, temperature=1.0, seed=s)).text
        for s in range(4)
    }
    assert len(texts) > 1


def test_next_token_probs_sum_to_one(llm):
    cands = ["1", "2", "3", "4", "5"]
    msgs = [conv("Rate from 1 to 5 how kind this is: 'You are a wonderful friend.' Answer with a digit."), conv("Hi")]
    rows = asyncio.run(llm.anext_token_probs(msgs, cands, assistant_prefix="Score: "))
    assert len(rows) == 2
    for row in rows:
        assert list(row) == cands
        assert abs(sum(row.values()) - 1.0) < 1e-5 and all(0 <= p <= 1 for p in row.values())
    with pytest.raises(LLMError, match="cannot be told apart"):
        asyncio.run(llm.anext_token_probs(msgs[:1], ["1", "1"]))


def test_a_failing_batch_fails_every_caller_and_the_worker_survives(llm, monkeypatch):
    def boom(group):
        raise RuntimeError("injected generate failure")

    monkeypatch.setattr(llm, "_generate", boom)

    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(llm.achat(conv(p), GREEDY) for p in PROMPTS), return_exceptions=True), timeout=30
        )

    out = asyncio.run(main())
    assert len(out) == 4 and all(isinstance(e, LLMError) and "injected generate failure" in str(e) for e in out)
    errors = []

    def sync_call():
        try:
            llm.generate([conv("x")], GREEDY)
        except LLMError as exc:
            errors.append(exc)

    t = threading.Thread(target=sync_call)
    t.start()
    t.join(30)
    assert not t.is_alive() and len(errors) == 1
    monkeypatch.undo()
    assert llm.chat(conv(PROMPTS[0]), SamplingParams(max_tokens=2, temperature=0)).completion_tokens == 2


def test_worker_is_a_daemon_that_exits_when_idle_and_restarts(llm):
    """A sibling sharing the loaded weights, with a short idle timeout; also races submit vs exit."""
    quick = LocalLLM(llm.path, name="quick", idle_exit_s=0.02, gather_ms=0)
    quick._model, quick._tokenizer = llm._model, llm._tokenizer
    quick._generate = lambda group: [Completion(text=f"ok-{r.messages[0]['content']}") for r in group]  # no torch
    assert quick.chat(conv("a"), GREEDY).text == "ok-a"
    assert quick._thread is not None and quick._thread.daemon
    deadline = time.monotonic() + 5
    while quick.worker_alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not quick.worker_alive and quick._thread is None
    # submits landing right when the worker gives up must still be served (never stranded)
    for i in range(150):
        time.sleep((i % 9) * 0.005)  # 0 to 40 ms: on both sides of the 20 ms idle exit
        assert quick.submit(conv(str(i)), GREEDY).result(timeout=5).text == f"ok-{i}"
    quick.close()
    assert not quick.worker_alive
    assert quick.chat(conv("again"), GREEDY).text == "ok-again"  # close() is not the end: it restarts
    quick.close()
    names = [t.name for t in threading.enumerate()]
    assert "kardia-local-quick" not in names


def _recording(name: str, seconds: float = 0.0, **options) -> tuple[LocalLLM, list[list[str]]]:
    """A LocalLLM whose generate step records each batch's prompts (no model, no torch)."""
    inst = LocalLLM("unused", name=name, **options)
    batches: list[list[str]] = []

    def fake(group):
        batches.append([r.messages[0]["content"] for r in group])
        time.sleep(seconds)
        return [Completion(text=r.messages[0]["content"]) for r in group]

    inst._generate = fake
    return inst, batches


def test_a_burst_arriving_over_time_forms_one_batch():
    """Callers that start together but reach the queue a few ms apart still run as one batch."""
    inst, batches = _recording("burst", gather_ms=20, gather_max_ms=2000)
    futs = []
    for i in range(8):
        futs.append(inst.submit(conv(str(i)), GREEDY))
        time.sleep(0.005)  # 40 ms for the whole burst: longer than the gap, each arrival within it
    assert [f.result(timeout=5).text for f in futs] == [str(i) for i in range(8)]
    assert [len(b) for b in batches] == [8]
    inst.close()


def test_a_full_batch_starts_without_waiting_out_the_window():
    inst, batches = _recording("full", max_batch=4, gather_ms=5000, gather_max_ms=5000)
    t0 = time.monotonic()
    futs = [inst.submit(conv(str(i)), GREEDY) for i in range(4)]
    for f in futs:
        f.result(timeout=10)
    assert time.monotonic() - t0 < 2.5 and [len(b) for b in batches] == [4]
    inst.close()


def test_requests_arriving_during_a_batch_join_the_next_one():
    inst, batches = _recording("continuous", seconds=0.3, gather_ms=0)
    first = inst.submit(conv("first"), GREEDY)
    time.sleep(0.1)  # the first batch is running now
    later = [inst.submit(conv(f"later{i}"), GREEDY) for i in range(5)]
    for f in [first] + later:
        f.result(timeout=10)
    assert batches == [["first"], [f"later{i}" for i in range(5)]]
    inst.close()


def test_waiting_requests_are_batched_by_similar_prompt_length():
    """More waiting than one batch holds: the oldest goes with the closest lengths; order is kept."""
    inst, batches = _recording("lengths", seconds=0.3, max_batch=3, gather_ms=0)
    block = inst.submit(conv("block"), GREEDY)
    time.sleep(0.1)
    texts = ["s1", "L" * 200 + "1", "s2", "L" * 200 + "2", "s3", "L" * 200 + "3"]
    futs = [inst.submit(conv(t), GREEDY) for t in texts]
    for f in [block] + futs:
        f.result(timeout=10)
    assert batches[1:] == [["s1", "s2", "s3"], [texts[1], texts[3], texts[5]]]
    inst.close()
