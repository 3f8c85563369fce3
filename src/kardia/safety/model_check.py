"""The optional model-based check: an LLM reads the turn for indirect signs the patterns cannot list.

Its prompt is a data file (`resources/safety/model_check.txt`). The model answers one line of JSON; an
answer that cannot be read is a `ModelCheckError` (the caller records it in `RiskAssessment.errors`),
never a silent "no risk".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..paths import resource_path
from ..prompts import fill
from .types import CATEGORIES, LEVELS, RiskAssessment
from ..llm import LLMError, SamplingParams, load_llm

DEFAULT_PROMPT = "model_check.txt"


class ModelCheckError(RuntimeError):
    """The model check failed or its answer could not be parsed."""


def prompt_path(path: str | Path | None = None) -> Path:
    return Path(path) if path else resource_path("safety", DEFAULT_PROMPT)


def build_messages(message: str, history: list[dict] | None = None, prompt: str | Path | None = None) -> list[dict]:
    lines = []
    for m in (history or [])[-6:]:
        role = "Person" if m.get("role") == "user" else "Assistant"
        if m.get("role") in ("user", "assistant"):
            lines.append(f"{role}: {str(m.get('content', '')).strip()}")
    text = fill(prompt_path(prompt), history="\n".join(lines) or "(none)", message=message.strip())
    return [{"role": "user", "content": text}]


def parse_verdict(text: str) -> RiskAssessment:
    """Read the model's JSON line; raise ModelCheckError naming what is wrong."""
    m = re.search(r"\{.*?\}", text or "", flags=re.S)
    if not m:
        raise ModelCheckError(f"model check: no JSON object in answer {text[:120]!r}")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as exc:
        raise ModelCheckError(f"model check: answer is not valid JSON ({exc.msg}): {m.group(0)[:120]!r}") from None
    category = str(obj.get("category", "")).strip().lower() or "none"
    level = str(obj.get("level", "")).strip().lower() or "none"
    if category not in CATEGORIES + ("none",):
        raise ModelCheckError(f"model check: field category: {category!r} not in {CATEGORIES + ('none',)}")
    if level not in LEVELS:
        raise ModelCheckError(f"model check: field level: {level!r} not in {LEVELS}")
    if (category == "none") != (level == "none"):
        raise ModelCheckError(f"model check: category {category!r} and level {level!r} disagree")
    evidence = str(obj.get("evidence", "")).strip()
    if category == "none":
        return RiskAssessment(source="model")
    return RiskAssessment(
        category=category,
        level=level,
        categories=[category],
        evidence=[f"model: {evidence}" if evidence else "model: (no evidence given)"],
        source="model",
    )


async def amodel_check(
    message: str, history: list[dict] | None, model: str, prompt: str | Path | None = None, max_tokens: int = 96
) -> RiskAssessment:
    llm = load_llm(model)
    try:
        completion = await llm.achat(build_messages(message, history, prompt), SamplingParams(max_tokens=max_tokens, temperature=0.0))
    except LLMError as exc:
        raise ModelCheckError(f"model check: {exc}") from None
    return parse_verdict(completion.text)
