"""Pairwise comparison with hidden labels, in both orders (position bias is measured, not assumed away).

Each pair is judged twice: first response as A, then as B. A verdict that follows the position
(A both times, or B both times) is a flip; only an order-consistent preference counts as a win.
Length bias (judges favour the longer reply) is measured by `kardia eval-pairwise` and can be
damped as EQ-Bench 3 does, by cutting both replies to the same length (`max_reply_chars`).
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel

from ..llm import LLMError, SamplingParams
from ..prompts import fill
from .core import ErrorKind, JudgeItem, ModelRole, data_sections
from .isolate import data_block
from .parse import JudgeParseError, parse_verdict
from .rubric import Rubric, load_rubric


class PairwiseResult(BaseModel):
    first_as_a: Literal["first", "second"] | None = None  # winner when the first response is shown as A
    first_as_b: Literal["first", "second"] | None = None  # winner when the first response is shown as B
    preferred: Literal["first", "second"] | None = None  # the order-consistent winner, else None
    flipped: bool | None = None  # True when the verdict followed the position instead of the content
    error: str | None = None
    error_kind: ErrorKind | None = None  # call (retry it) or parse (the judge answered without a verdict)
    probs: dict[str, dict[str, float]] | None = None


def truncate_reply(text: str, max_chars: int | None) -> str:
    """Cut at the last word boundary within `max_chars` and mark the cut, so the judge sees it was cut."""
    if max_chars is None or len(text) <= max_chars:
        return text
    if max_chars < 1:
        raise ValueError(f"max_reply_chars must be >= 1, got {max_chars}")
    cut = text[:max_chars]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut).rstrip() + " [...]"


class PairwiseJudge(ModelRole):
    def __init__(
        self,
        model: str = "embedded",
        rubric: str | Rubric = "kardia",
        scorer: Literal["text", "probs", "auto"] = "text",
        *,
        llm=None,
        cache: bool | str = True,
        max_tokens: int = 200,
        llm_options: dict | None = None,
        max_reply_chars: int | None = None,
    ):
        if max_reply_chars is not None and max_reply_chars < 1:
            raise ValueError(f"max_reply_chars must be >= 1, got {max_reply_chars}")
        self.max_reply_chars = max_reply_chars
        self.model = model
        self.rubric = load_rubric(rubric)
        self._scorer = scorer
        self._llm = llm
        self.cache = cache
        self.max_tokens = max_tokens
        self.llm_options = llm_options or {}

    def messages(self, item: JudgeItem, a: str, b: str, template: str) -> list[dict]:
        sections = data_sections(item)[:-1] + [("reply A", a), ("reply B", b)]
        block, tag = data_block(sections)
        user = fill(template, rubric_name=self.rubric.name, rubric=self.rubric.describe(), data=block)
        return [{"role": "system", "content": fill("judge/system", tag=tag)}, {"role": "user", "content": user}]

    async def _one(self, item: JudgeItem, a: str, b: str) -> tuple[str, dict | None]:
        if self.scorer == "probs":
            p = (await self.llm.anext_token_probs([self.messages(item, a, b, "judge/pairwise_probs")], ["A", "B"], ""))[0]
            return ("A" if p["A"] >= p["B"] else "B"), p
        text = (await self.llm.achat(self.messages(item, a, b, "judge/pairwise"), SamplingParams(max_tokens=self.max_tokens, temperature=0.0))).text
        return parse_verdict(text, ["A", "B"]), None

    async def acompare(self, item: JudgeItem | dict, first: str, second: str) -> PairwiseResult:
        """`item` gives the context (its `response` is ignored); `first` and `second` are compared."""
        item = item if isinstance(item, JudgeItem) else JudgeItem.model_validate(item)
        first, second = truncate_reply(first, self.max_reply_chars), truncate_reply(second, self.max_reply_chars)
        try:
            (v1, p1), (v2, p2) = await asyncio.gather(self._one(item, first, second), self._one(item, second, first))
        except (JudgeParseError, LLMError) as exc:
            kind = "call" if isinstance(exc, LLMError) else "parse"
            return PairwiseResult(error=f"{type(exc).__name__}: {exc}", error_kind=kind)
        w1 = "first" if v1 == "A" else "second"
        w2 = "first" if v2 == "B" else "second"
        return PairwiseResult(
            first_as_a=w1,  # type: ignore[arg-type]
            first_as_b=w2,  # type: ignore[arg-type]
            preferred=w1 if w1 == w2 else None,  # type: ignore[arg-type]
            flipped=w1 != w2,
            probs={"first_as_a": p1, "first_as_b": p2} if p1 is not None else None,
        )
