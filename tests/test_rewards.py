"""TRL-contract rewards against the FAKE OpenAI server with a SCRIPTED judge (no model involved)."""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import re

import pytest

from kardia.rewards import completion_text, emotion_reward, format_reward, make_kardia_reward, make_rubric_reward
from kardia.spans import render
from kardia.swift_plugin import plugin_classes, register_swift_plugins


@pytest.fixture(autouse=True)
def _fake_server_request_annotation():
    # Foundation bug (reported): the fake server's `request: Request` annotation is unresolvable under
    # `from __future__ import annotations`, so FastAPI answers 422. Provide the name until it is fixed.
    import fastapi

    import kardia.testing.fake_openai_server as f

    if not hasattr(f, "Request"):
        f.Request = fastapi.Request
    yield


def scripted_judge(messages, body) -> str:
    """SCRIPTED test judge: every dimension 4, except replies containing BAD (unparseable answer)."""
    user = messages[-1]["content"]
    if "BAD" in user:
        return "I would rather not say."
    return json.dumps({k: 4 for k in re.findall(r"\(key: (\w+)\)", user)})


GOOD = render("they miss home", "moving is lonely", "lonely", "That sounds lonely; what do you miss most?")
WRONG_EMO = render("they miss home", "moving is lonely", "joyful", "That sounds lonely.")
BROKEN = "<|understanding_begin|>x<|understanding_end|> no more spans"
PROMPT = [{"role": "system", "content": "sys"}, {"role": "user", "content": "I moved abroad and feel alone."}]


class Log:
    def __init__(self):
        self.metrics: dict[str, list[float]] = {}

    def __call__(self, name, value):
        self.metrics.setdefault(name, []).append(value)


def test_completion_text_forms():
    assert completion_text("a") == "a"
    assert completion_text([{"role": "assistant", "content": "b"}]) == "b"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "c"}]}]) == "c"


def test_format_and_emotion_rewards_plain_and_conversational():
    conv = [[{"role": "assistant", "content": c}] for c in (GOOD, WRONG_EMO, BROKEN)]
    for completions in ([GOOD, WRONG_EMO, BROKEN], conv):
        log = Log()
        assert format_reward(completions, log_metric=log) == [1.0, 1.0, 0.0]
        assert emotion_reward(completions, emotion=["Lonely", "lonely", "lonely"], log_metric=log) == [1.0, 0.0, 0.0]
        assert log.metrics["emotion_reward/unreadable"] == [1.0]
    assert emotion_reward([GOOD], emotion=[None]) == [None]
    with pytest.raises(ValueError, match="not one of the 32"):
        emotion_reward([GOOD], emotion=["hungry"])
    with pytest.raises(ValueError, match="needs the gold"):
        emotion_reward([GOOD])


def test_rubric_reward_is_async_named_concurrent_and_counts_failures(fake_server):
    server = fake_server(responder=scripted_judge, latency_s=0.2)
    reward = make_rubric_reward(server.model_string(), cache=False)
    assert reward.__name__ == "rubric_reward" and inspect.iscoroutinefunction(reward.__call__)
    completions = [[{"role": "assistant", "content": GOOD}]] * 6 + [render("u", "r", "sad", "BAD reply")] * 2
    log = Log()
    import time

    t = time.perf_counter()
    out = asyncio.run(reward(completions, prompts=[PROMPT] * 8, person=["INFP"] * 8, situation=["moved"] * 8, log_metric=log))
    elapsed = time.perf_counter() - t
    assert out[:6] == [pytest.approx(0.75)] * 6 and out[6:] == [None, None]  # failures are None, never 0
    assert reward.failures == 2 and reward.samples == 8
    assert log.metrics["rubric_reward/failures"] == [2.0]
    assert log.metrics["rubric_reward/empathy"] == [4.0]
    assert server.stats.max_in_flight >= 4 and elapsed < 8 * 0.2  # judged concurrently
    # the judged reply is the response span, the profile and history are passed
    body = server.stats  # noqa: F841


def test_rubric_reward_judges_what_was_written(fake_server):
    seen = []

    def recording(messages, body):
        seen.append(messages[-1]["content"])
        return scripted_judge(messages, body)

    server = fake_server(responder=recording)
    reward = make_rubric_reward(server.model_string(), cache=False)
    reward.sync([GOOD, BROKEN], prompts=[PROMPT, PROMPT], person=["INFP, loves hiking", "p"])
    # the two requests are concurrent: their arrival order is not defined, so pick each by its profile
    seen = sorted(seen, key=lambda text: "| INFP, loves hiking" not in text)
    assert len(seen) == 2 and "| That sounds lonely; what do you miss most?" in seen[0] and "moving is lonely" not in seen[0]
    assert "| INFP, loves hiking" in seen[0] and "seeker: I moved abroad and feel alone." in seen[0]
    assert "| x no more spans" in seen[1]  # broken format: its own text is judged, not a friendly fallback


def test_kardia_reward_weights_gate_and_failures(fake_server):
    server = fake_server(responder=scripted_judge)
    comps = [GOOD, WRONG_EMO, BROKEN, render("u", "r", "lonely", "BAD")]
    cols = dict(prompts=[PROMPT] * 4, emotion=["lonely"] * 4)
    log = Log()
    plain = make_kardia_reward(server.model_string(), cache=False)
    out = asyncio.run(plain(comps, log_metric=log, **cols))
    assert out[0] == pytest.approx((1 + 1 + 0.75) / 3)
    assert out[1] == pytest.approx((1 + 0 + 0.75) / 3)
    assert out[2] == pytest.approx((0 + 0 + 0.75) / 3)
    assert out[3] is None and plain.failures == 1
    assert "kardia_reward/rubric/empathy" in log.metrics and log.metrics["kardia_reward/rubric/failures"] == [1.0]
    before = server.stats.requests
    gated = make_kardia_reward(server.model_string(), weights=(0.2, 0.3, 0.5), gate=True, cache=False)
    out = asyncio.run(gated(comps, **cols))
    assert out[2] == 0.0  # no format, no rubric credit...
    assert server.stats.requests - before == 3 + 1  # ...and no judge call (3 judged, the BAD one retried once)
    assert out[0] == pytest.approx(0.2 + 0.3 + 0.5 * 0.75)
    with pytest.raises(ValueError):
        make_kardia_reward(server.model_string(), weights=(1, 1))


def test_swift_adapter_without_swift(fake_server):
    server = fake_server(responder=scripted_judge)
    registry: dict = {}
    classes = register_swift_plugins(server.model_string(), orms=registry, cache=False)
    assert set(registry) == {"kardia_format", "kardia_emotion", "kardia_rubric", "kardia"} and registry == classes
    assert registry["kardia_format"]()([GOOD, BROKEN]) == [1.0, 0.0]
    assert registry["kardia_emotion"]()([GOOD], emotion=["lonely"]) == [1.0]
    rubric = registry["kardia_rubric"]()
    msgs = [PROMPT + [{"role": "assistant", "content": GOOD}], PROMPT]
    out = asyncio.run(rubric([GOOD, render("u", "r", "sad", "BAD")], messages=msgs))
    assert out[0] == pytest.approx(0.75) and math.isnan(out[1])
    assert "swift" not in __import__("sys").modules
    assert plugin_classes("embedded")["kardia_rubric"].judge_model == "embedded"
