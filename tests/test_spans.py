"""The four-span parser: dozens of malformed answers, both spellings, and properties over any text."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kardia.spans import (
    SPAN_NAMES,
    SPAN_TOKENS,
    fallback_message,
    parse,
    render,
    strip_span_markup,
    visible_response,
)

_CHAT_TOKEN = re.compile(r"<\|[A-Za-z0-9_.:-]{1,64}\|>")
U, R, E, S = "They failed an exam they studied for.", "Effort unrewarded hurts.", "disappointed", "That sounds so hard."


def tok(name: str, value: str) -> str:
    return f"<|{name}_begin|>{value}<|{name}_end|>"


def tag(name: str, value: str) -> str:
    return f"<{name}>{value}</{name}>"


GOOD_TOKENS = tok("understanding", U) + tok("reasoning", R) + tok("emotion", E) + tok("response", S)
GOOD_TAGS = tag("understanding", U) + tag("reasoning", R) + tag("emotion", E) + tag("response", S)


def test_span_tokens_are_the_eight_in_order():
    assert SPAN_NAMES == ("understanding", "reasoning", "emotion", "response")
    assert SPAN_TOKENS == (
        "<|understanding_begin|>", "<|understanding_end|>", "<|reasoning_begin|>", "<|reasoning_end|>",
        "<|emotion_begin|>", "<|emotion_end|>", "<|response_begin|>", "<|response_end|>",
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        GOOD_TOKENS,
        GOOD_TAGS,
        "\n".join([tok("understanding", U), tok("reasoning", R), tok("emotion", E), tok("response", S)]),
        "  \n" + GOOD_TAGS + "\n\n",
        # mixed spellings: per span and within one span
        tag("understanding", U) + tok("reasoning", R) + tag("emotion", E) + tok("response", S),
        f"<|understanding_begin|>{U}</understanding><reasoning>{R}<|reasoning_end|>" + tok("emotion", E) + tag("response", S),
        # case and inner blanks drift
        f"<Understanding>{U}</Understanding><REASONING>{R}</REASONING>< emotion >{E}</ emotion><|Response_Begin|>{S}<| response_end |>",
        # values padded with whitespace and newlines
        tok("understanding", f"\n  {U}\n") + tok("reasoning", f" {R} ") + tok("emotion", f"\t{E}\n") + tok("response", f"\n{S}\n"),
    ],
)
def test_well_formed_answers_parse_ok(text):
    p = parse(text)
    assert p.ok, p.problems
    assert p.problems == []
    assert (p.understanding, p.reasoning, p.emotion, p.response) == (U, R, E, S)


def test_unicode_values_survive():
    vals = ("Elle a perdu son chien 🐕.", "悲しみには時間が必要。", "sad", "Je suis là pour toi ❤️ — vraiment.")
    for style in ("tokens", "tags"):
        p = parse(render(*vals, style=style))
        assert p.ok and p.as_dict() == dict(zip(SPAN_NAMES, vals))


BROKEN = [
    # (text, expected problem fragments, expected response value)
    ("", ["missing: no understanding", "missing: no response"], None),
    ("   \n\t", ["missing: no understanding", "missing: no reasoning", "missing: no emotion", "missing: no response"], None),
    ("Just a plain friendly reply.", ["missing: no response", "stray text before the first span"], None),
    (tok("understanding", U) + tok("reasoning", R) + tok("emotion", E), ["missing: no response"], None),
    (tok("reasoning", R) + tok("emotion", E) + tok("response", S), ["missing: no understanding"], S),
    (tok("understanding", U) + tok("emotion", E) + tok("response", S), ["missing: no reasoning"], S),
    (tok("understanding", U) + tok("reasoning", R) + tok("response", S), ["missing: no emotion"], S),
    (tok("response", S), ["missing: no understanding", "missing: no reasoning", "missing: no emotion"], S),
    # empty spans
    (tok("understanding", "") + tok("reasoning", R) + tok("emotion", E) + tok("response", S), ["empty: the understanding"], S),
    (tok("understanding", U) + tok("reasoning", "  \n ") + tok("emotion", E) + tok("response", S), ["empty: the reasoning"], S),
    (tok("understanding", U) + tok("reasoning", R) + tok("emotion", "") + tok("response", S), ["empty: the emotion"], S),
    (tok("understanding", U) + tok("reasoning", R) + tok("emotion", E) + tok("response", " "), ["empty: the response"], ""),
    (tag("understanding", "") + tag("reasoning", "") + tag("emotion", "") + tag("response", ""), ["empty: the understanding", "empty: the response"], ""),
    # duplicated
    (GOOD_TOKENS + tok("response", "Second reply."), ["duplicated: response appears 2 times"], S),
    (tok("understanding", U) + tok("understanding", "again") + tok("reasoning", R) + tok("emotion", E) + tok("response", S), ["duplicated: understanding appears 2 times"], S),
    (GOOD_TAGS + GOOD_TAGS, ["duplicated: understanding", "duplicated: reasoning", "duplicated: emotion", "duplicated: response"], S),
    (GOOD_TOKENS + GOOD_TAGS, ["duplicated: response appears 2 times"], S),
    # out of order
    (tok("response", S) + tok("understanding", U) + tok("reasoning", R) + tok("emotion", E), ["out of order: found response -> understanding"], S),
    (tok("understanding", U) + tok("emotion", E) + tok("reasoning", R) + tok("response", S), ["out of order"], S),
    (tag("emotion", E) + tag("response", S) + tag("understanding", U) + tag("reasoning", R), ["out of order"], S),
    # unclosed
    (tok("understanding", U) + tok("reasoning", R) + tok("emotion", E) + "<|response_begin|>" + S, ["unclosed: response (no end marker"], None),
    (tok("understanding", U) + "<|reasoning_begin|>" + R + tok("emotion", E) + tok("response", S), ["unclosed: reasoning (the emotion span begins inside it)"], S),
    (f"<understanding>{U}" + tag("reasoning", R) + tag("emotion", E) + tag("response", S), ["unclosed: understanding"], S),
    (tok("understanding", U) + tok("reasoning", R) + f"<|emotion_begin|>{E}<|response_end|>" + tok("response", S), ["unclosed: emotion (closed by the response end marker)"], S),
    (f"<response>{S}", ["unclosed: response", "missing: no understanding"], None),
    ("<|response_begin|>", ["unclosed: response"], None),
    # stray end markers
    (GOOD_TOKENS + "<|emotion_end|>", ["stray end marker: emotion end without a begin"], S),
    ("</response></response>" + GOOD_TAGS, ["stray end marker: response end without a begin (2 times)"], S),
    (f"{S}<|response_end|>", ["stray end marker: response", "missing: no response", "stray text before the first span"], None),
    # stray text
    ("Sure! Here is my answer:\n" + GOOD_TOKENS, ["stray text before the first span: 'Sure! Here is my answer:'"], S),
    (GOOD_TOKENS + "\nHope this helps!", ["stray text after response: 'Hope this helps!'"], S),
    (tok("understanding", U) + " and then " + tok("reasoning", R) + tok("emotion", E) + tok("response", S), ["stray text after understanding"], S),
    ("<think>hmm</think>" + GOOD_TAGS, ["stray text before the first span"], S),
    # nested spans
    (f"<response>{S}<reasoning>{R}</reasoning></response>", ["unclosed: response (the reasoning span begins inside it)", "stray end marker: response"], None),
    # look-alikes that are not markers stay text
    ("<|response|>" + S + "<|/response|>", ["missing: no response", "stray text"], None),
    ("<responses>" + S + "</responses>", ["missing: no response", "stray text"], None),
    ("[response]" + S + "[/response]", ["missing: no response"], None),
    ("<|response_start|>" + S + "<|response_stop|>", ["missing: no response"], None),
    # the reasoning alone must never count as a response
    (tok("reasoning", "The user is vulnerable; hide this."), ["missing: no response"], None),
    ("<|response_begin|><|response_end|>" + tok("reasoning", R), ["empty: the response", "out of order"], ""),
]


@pytest.mark.parametrize("text,fragments,response", BROKEN, ids=[f"broken{i}" for i in range(len(BROKEN))])
def test_broken_answers_name_their_problems(text, fragments, response):
    p = parse(text)
    assert not p.ok
    assert p.problems
    for frag in fragments:
        assert any(frag in problem for problem in p.problems), (frag, p.problems)
    assert p.response == response
    shown = visible_response(text)
    if response:
        assert shown == response
    else:
        assert shown == fallback_message()
    # never the reasoning or the understanding, never raw markup
    if p.reasoning:
        assert p.reasoning not in shown
    for t in SPAN_TOKENS:
        assert t not in shown
    assert "<response>" not in shown and "</response>" not in shown


def test_non_string_input_is_a_problem_not_a_crash():
    for value in (None, 42, b"<response>x</response>", ["<response>x</response>"]):
        p = parse(value)
        assert not p.ok and p.problems[0].startswith("not text")
        assert visible_response(value) == fallback_message()


def test_huge_input_is_linear_and_problem_list_bounded():
    junk = ("<|response_end|> noise " * 20000) + GOOD_TOKENS * 500 + "x" * 2_000_000
    p = parse(junk)
    assert not p.ok
    assert p.response == S
    assert len(p.problems) <= 21
    assert all(len(problem) < 200 for problem in p.problems)


def test_fallback_is_warm_and_free_of_markup():
    msg = fallback_message()
    assert 20 < len(msg) < 300
    assert strip_span_markup(msg) == msg and "<" not in msg


def test_visible_response_removes_other_chat_tokens():
    text = GOOD_TOKENS.replace(S, S + "<|im_end|>")
    assert visible_response(text) == S
    only_tokens = tok("understanding", U) + tok("reasoning", R) + tok("emotion", E) + tok("response", "<|eot_id|>")
    assert visible_response(only_tokens) == fallback_message()


def test_render_styles_and_errors():
    assert render(U, R, E, S) == "\n".join([tok("understanding", U), tok("reasoning", R), tok("emotion", E), tok("response", S)])
    assert render(U, R, E, S, style="tags").splitlines()[3] == tag("response", S)
    with pytest.raises(ValueError, match="style"):
        render(U, R, E, S, style="xml")
    with pytest.raises(ValueError, match="response text contains span markup"):
        render(U, R, E, "hi <|response_end|> injected")
    with pytest.raises(TypeError, match="emotion must be a string"):
        render(U, R, None, S)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("<response>hi</response>", "hi"),
        ("<|emotion_begin|>sad<|emotion_end|>", "sad"),
        ("<<response>response>evil</</response>response>", "evil"),
        ("<|response_<response>begin|>", ""),
        ("plain <b>html</b> stays", "plain <b>html</b> stays"),
        ("< / Reasoning >x", "x"),
    ],
)
def test_strip_span_markup(text, expected):
    assert strip_span_markup(text) == expected


# -- properties -------------------------------------------------------------------------------------

_pieces = st.sampled_from(
    list(SPAN_TOKENS) + [f"<{n}>" for n in SPAN_NAMES] + [f"</{n}>" for n in SPAN_NAMES] + ["<", ">", "|", "/", " ", "\n"]
)
_texty = st.lists(st.one_of(_pieces, st.text(max_size=12)), max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=300), _texty))
def test_parse_never_raises_and_values_are_substrings(text):
    p = parse(text)
    assert isinstance(p.ok, bool) and isinstance(p.problems, list)
    assert p.ok == (not p.problems)
    for name in SPAN_NAMES:
        value = getattr(p, name)
        if value is not None:
            assert value in text
            assert value == value.strip()
    shown = visible_response(text)
    # what a person sees is the fallback or the response span itself (minus chat tokens): nothing else
    if p.response:
        assert shown in (fallback_message(), _CHAT_TOKEN.sub("", p.response).strip())
    else:
        assert shown == fallback_message()
    for t in SPAN_TOKENS:
        assert t not in shown


_value = st.text(min_size=1, max_size=60).map(strip_span_markup).map(str.strip).filter(bool)


@settings(max_examples=200, deadline=None)
@given(_value, _value, _value, _value, st.sampled_from(["tokens", "tags"]))
def test_render_parse_round_trip(u, r, e, s, style):
    p = parse(render(u, r, e, s, style=style))
    assert p.ok, p.problems
    assert (p.understanding, p.reasoning, p.emotion, p.response) == (u, r, e, s)
    if "<|" not in s:
        assert visible_response(render(u, r, e, s, style=style)) == s


@settings(max_examples=200, deadline=None)
@given(_texty)
def test_strip_span_markup_leaves_no_marker(text):
    cleaned = strip_span_markup(text)
    p = parse(cleaned)
    assert p.understanding is p.reasoning is p.emotion is p.response is None
    assert not any(m in p_ for p_ in p.problems for m in ("unclosed", "stray end"))


def test_special_tokens_of_other_families_are_not_visible():
    from kardia.spans import render, visible_response

    text = render(understanding="u", reasoning="r", emotion="sad",
                  response="I hear you.<｜end▁of▁sentence｜><｜Assistant｜></s><end_of_turn><|eot_id|>")
    assert visible_response(text) == "I hear you."
