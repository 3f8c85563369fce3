"""The data-building critic (role R): FAIL / PASS / SOLVED with a reason per dimension.

Used by `kardia build` while dialogues are generated. A verdict that cannot be read is an `error`
(the caller counts it and decides: e.g. treat as FAIL and revise), never a silent PASS.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Sequence

from pydantic import BaseModel, Field

from ..llm import LLMError, SamplingParams
from ..llm.types import run_sync
from ..prompts import fill
from ..spans import SPAN_NAMES, parse
from .core import ErrorKind, JudgeItem, ModelRole
from .isolate import data_block, history_text
from .parse import JudgeParseError, parse_reasons, parse_verdict
from .rubric import Rubric, load_rubric

Verdict = Literal["FAIL", "PASS", "SOLVED"]


class Critique(BaseModel):
    verdict: Verdict | None = None
    reasons: dict[str, str] = Field(default_factory=dict)
    raw: str = ""
    error: str | None = None
    error_kind: ErrorKind | None = None  # call (the critic's model failed) or parse (its answer had no verdict)
    probs: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.verdict is not None


def _turn_text(response: str) -> str:
    """The four spans as labelled lines (what the critic grades), or the raw text when no span is found."""
    parsed = parse(response)
    values = parsed.as_dict()
    if all(v is None for v in values.values()):
        return response
    lines = [f"{name}: {values[name] if values[name] is not None else '(missing)'}" for name in SPAN_NAMES]
    if parsed.problems:
        lines.append("format problems: " + "; ".join(parsed.problems))
    return "\n".join(lines)


def _check_distinct_first_tokens(llm, labels: list[str]) -> None:
    """The probs scorer reads each label's first token: two labels sharing one would be a coin toss."""
    tok = getattr(llm, "tokenizer", None)
    if tok is None:
        return
    firsts = [tok.encode(label, add_special_tokens=False)[0] for label in labels]
    if len(set(firsts)) != len(firsts):
        raise ValueError(f"verdict labels {labels} share a first token for this model: use scorer='text'")


class Critic(ModelRole):
    """Grades one generated supporter turn. scorer "text" parses JSON / `Verdict:` lines; "probs" takes
    the most probable verdict word from a local model (never unparseable, no reasons); "auto" picks."""

    def __init__(
        self,
        model: str = "embedded",
        rubric: str | Rubric = "critic",
        scorer: Literal["text", "probs", "auto"] = "text",
        *,
        llm=None,
        cache: bool | str = True,
        max_tokens: int = 600,
        parse_retries: int = 1,
        llm_options: dict | None = None,
    ):
        self.model = model
        self.rubric = load_rubric(rubric)
        if self.rubric.kind != "verdict":
            raise ValueError(f"rubric {self.rubric.name} has no verdicts: use kardia.judge.Judge")
        self._scorer = scorer
        self._llm = llm
        self.cache = cache
        self.max_tokens = max_tokens
        self.parse_retries = parse_retries
        self.llm_options = llm_options or {}

    def messages(self, item: JudgeItem, template: str = "judge/critic") -> list[dict]:
        sections = [
            ("profile of the person", item.profile or "(no profile given)"),
            ("their situation", item.situation or "(not stated)"),
        ]
        if item.emotion:
            sections.append(("target emotion (for reference)", item.emotion))
        sections += [("conversation so far", history_text(item.history)), ("turn to grade", _turn_text(item.response))]
        block, tag = data_block(sections)
        r = self.rubric
        dims = "\n".join(f"- {d.name} (key: {d.key}): {d.definition.strip()}" for d in r.dimensions)
        verdicts = "\n".join(f"- {k}: {v.strip()}" for k, v in r.verdicts.items())
        reasons = ", ".join(f'"{d.key}": "<short reason>"' for d in r.dimensions)
        example = "{" + f'"reasons": {{{reasons}}}, "verdict": "<one of {" | ".join(r.verdicts)}>"' + "}"
        user = fill(
            template,
            rubric_name=r.name,
            rubric_description=r.description.strip(),
            dimensions=dims,
            verdicts=verdicts,
            data=block,
            output_example=example,
            verdict_list=", ".join(r.verdicts),
        )
        return [{"role": "system", "content": fill("judge/system", tag=tag)}, {"role": "user", "content": user}]

    async def acritique(self, item: JudgeItem | dict) -> Critique:
        item = item if isinstance(item, JudgeItem) else JudgeItem.model_validate(item)
        labels = list(self.rubric.verdicts)
        try:
            if self.scorer == "probs":
                _check_distinct_first_tokens(self.llm, labels)
                probs = (await self.llm.anext_token_probs([self.messages(item, "judge/critic_probs")], labels, ""))[0]
                verdict = max(labels, key=lambda v: probs[v])
                return Critique(verdict=verdict, probs=probs)  # type: ignore[arg-type]
            raw = ""
            last: Exception | None = None
            msgs = self.messages(item)
            for attempt in range(self.parse_retries + 1):
                params = (
                    SamplingParams(max_tokens=self.max_tokens, temperature=0.0)
                    if attempt == 0
                    else SamplingParams(max_tokens=self.max_tokens, temperature=0.7, seed=attempt)
                )
                raw = (await self.llm.achat(msgs, params)).text
                try:
                    verdict = parse_verdict(raw, labels)
                except JudgeParseError as exc:
                    last = exc
                    continue
                reasons = parse_reasons(raw, self.rubric.dimensions)
                return Critique(verdict=verdict, reasons=reasons, raw=raw)  # type: ignore[arg-type]
            return Critique(raw=raw, error=f"parse: {last} [after {self.parse_retries + 1} attempt(s)]", error_kind="parse")
        except LLMError as exc:
            return Critique(error=f"llm: {exc}", error_kind="call")

    async def acritique_many(self, items: Sequence[JudgeItem | dict]) -> list[Critique]:
        return list(await asyncio.gather(*(self.acritique(i) for i in items)))

    def critique(self, item: JudgeItem | dict) -> Critique:
        return run_sync(self.acritique(item))
