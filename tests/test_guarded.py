"""The one guarded reply (kardia.guarded): its order of steps, in line and async."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from kardia import guarded

FOUR = (
    "<|understanding_begin|>u<|understanding_end|>\n<|reasoning_begin|>SECRET<|reasoning_end|>\n"
    "<|emotion_begin|>sad<|emotion_end|>\n<|response_begin|>{}<|response_end|>"
)


def _assess(message, history):
    return SimpleNamespace(at_risk="CRISIS" in message, category=None, level="none")


def _run(message, *, use_async, output=None, guard=True):
    calls = []

    def generate():
        calls.append("generate")
        return SimpleNamespace(text=FOUR.format("I'm here. method " if output else "I'm here."))

    def check_output(visible):
        calls.append(("output", visible))
        return "SAFE OUTPUT" if output else None

    def check(m, h):
        calls.append(("check", m, h))
        return _assess(m, h)

    crisis = lambda a: "SAFE REPLY"  # noqa: E731
    if not use_async:
        r = guarded.reply(message, [{"role": "user", "content": "before"}], generate=generate,
                          check=check if guard else None, crisis_reply=crisis, check_output=check_output)
    else:
        async def wrap(f, *a):
            return f(*a)

        r = asyncio.run(guarded.areply(
            message, [{"role": "user", "content": "before"}],
            check=lambda m, h: wrap(check, m, h), crisis_reply=crisis,
            generate=lambda: wrap(generate), check_output=lambda v: wrap(check_output, v)))
    return r, calls


@pytest.mark.parametrize("use_async", [False, True])
def test_crisis_gets_the_safe_reply_and_the_model_is_never_called(use_async):
    r, calls = _run("CRISIS now", use_async=use_async)
    assert r.shown == "SAFE REPLY" and r.completion is None and r.fired == "guard" and r.emotion is None
    assert calls == [("check", "CRISIS now", [{"role": "user", "content": "before"}])]
    assert r.for_model == "SAFE REPLY"


@pytest.mark.parametrize("use_async", [False, True])
def test_healthy_turn_shows_only_the_response_after_the_output_check(use_async):
    r, calls = _run("hello", use_async=use_async)
    assert [c if isinstance(c, str) else c[0] for c in calls] == ["check", "generate", "output"]
    assert calls[-1] == ("output", "I'm here.")  # the output check reads the visible response only
    assert r.shown == "I'm here." and "SECRET" not in r.shown and r.fired is None
    assert r.emotion == "sad" and r.for_model == r.completion.text  # well formed: the real answer goes back


@pytest.mark.parametrize("use_async", [False, True])
def test_unsafe_output_is_replaced_and_not_fed_back(use_async):
    r, _ = _run("hello", use_async=use_async, output=True)
    assert r.shown == "SAFE OUTPUT" and r.output_replaced and r.fired == "output_check"
    assert r.for_model == "SAFE OUTPUT"


def test_no_guard_generates_directly_and_a_check_needs_its_crisis_reply():
    r, calls = _run("CRISIS now", use_async=False, guard=False)
    assert r.assessment is None and r.completion is not None and calls[0] == "generate"
    with pytest.raises(TypeError):
        guarded.reply("x", [], generate=lambda: None, check=_assess)
