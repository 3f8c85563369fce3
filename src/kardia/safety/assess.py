"""`assess(message, history, model)`: patterns, then conversation context, then (optionally) a model.

Context: a short "yes" after the assistant asked about suicide is a disclosure; "tonight" after earlier
talk of pills is an escalation. Risk only in older turns does not flag the current one by itself, so a
person who disclosed and then talks about something else is not answered with the same script forever.
The model check can raise a level or add a category, never lower what the patterns found (the patterns
are the high-precision layer).
"""

from __future__ import annotations

from typing import Any

from .model_check import ModelCheckError, amodel_check
from .patterns import Match, load_patterns
from .types import CATEGORY_PRIORITY, RiskAssessment, level_rank
from .semantic import load_semantic
from ..llm.types import run_sync

HISTORY_USER_TURNS = 3


def _from_matches(matches: list[Match], source: str = "patterns") -> RiskAssessment:
    if not matches:
        return RiskAssessment(source=source)
    best = max(matches, key=lambda m: (level_rank(m.level), -CATEGORY_PRIORITY.index(m.category)))
    cats: list[str] = []
    for m in sorted(matches, key=lambda m: (-level_rank(m.level), CATEGORY_PRIORITY.index(m.category))):
        if m.category not in cats:
            cats.append(m.category)
    return RiskAssessment(
        category=best.category,
        level=best.level,
        categories=cats,
        rules=[m.rule for m in matches],
        evidence=[f"{m.rule}: {m.text!r}" for m in matches],
        source=source,
    )


def _merge(base: RiskAssessment, other: RiskAssessment) -> RiskAssessment:
    """Union of two assessments: the higher level names the category; errors and evidence add up."""
    if not other.at_risk:
        return base.model_copy(update={"errors": base.errors + other.errors})
    if not base.at_risk:
        return other.model_copy(update={"errors": base.errors + other.errors, "evidence": base.evidence + other.evidence})
    top = base if level_rank(base.level) >= level_rank(other.level) else other
    cats = list(dict.fromkeys(base.categories + other.categories))
    return RiskAssessment(
        category=top.category,
        level=top.level,
        categories=cats,
        rules=base.rules + other.rules,
        evidence=base.evidence + other.evidence,
        source=f"{base.source}+{other.source}",
        errors=base.errors + other.errors,
    )


def assess_patterns(message: str, history: list[dict] | None = None, patterns: str | None = None) -> RiskAssessment:
    """The pattern and context layers only (no model): fast, deterministic."""
    ps = load_patterns(patterns)
    result = _from_matches(ps.find(message))
    history = [m for m in (history or []) if isinstance(m, dict)]
    if not history:
        return result
    last_assistant = next((m for m in reversed(history) if m.get("role") == "assistant"), None)
    users = [m for m in history if m.get("role") == "user"][-HISTORY_USER_TURNS:]
    earlier = _from_matches([x for m in users for x in ps.find(str(m.get("content", "")))], source="context")
    if not result.at_risk and last_assistant is not None:
        if ps.is_risk_question(str(last_assistant.get("content", ""))) and ps.is_affirmative(message):
            return RiskAssessment(
                category="self_harm",
                level="medium",
                categories=["self_harm"],
                rules=["ctx_affirmative_answer"],
                evidence=["ctx_affirmative_answer: yes to the assistant's question about risk"],
                source="context",
            )
    if earlier.at_risk and ps.is_escalation(message):
        escalated = earlier.model_copy(
            update={
                "level": "high",
                "rules": earlier.rules + ["ctx_escalation"],
                "evidence": earlier.evidence + ["ctx_escalation: the risk named earlier now has a time or a farewell"],
                "source": "context",
            }
        )
        return _merge(result, escalated) if result.at_risk else escalated
    return result


def _with_learned(result: RiskAssessment, message: str, history: list[dict] | None) -> RiskAssessment:
    """Add the learned layer's finding (it only adds risk; see learned.py). Skipped when the patterns
    already found high risk: nothing to add, and it saves the encoder call."""
    if result.at_risk and result.level == "high":
        return result
    from .learned import load_learned

    return _merge(result, load_learned().assess(message, history))


def guard_process_init(patterns: str | None = None, nice: int = 10) -> None:
    """Start-up of a process that runs `assess_patterns` for a server: a lower priority (long texts yield
    the CPU to ordinary requests) and the patterns loaded before the first text arrives."""
    import os

    if nice and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:
            pass
    load_patterns(patterns)


def _with_semantic(result: RiskAssessment, message: str) -> RiskAssessment:
    """Add the semantic layer's finding (it only adds risk; see semantic.py)."""
    if result.at_risk:
        return result  # the precise layer already decided; save the encoder call

    return _merge(result, load_semantic().assess(message))


async def aassess(
    message: str,
    history: list[dict] | None = None,
    model: str | None = None,
    patterns: str | None = None,
    semantic: bool = False,
    learned: bool = False,
    executor: Any = None,
) -> RiskAssessment:
    """`assess` for async callers. The patterns run in a worker thread, or in `executor` when given (a
    server passes a process pool for long texts: in a thread they would still hold the GIL)."""
    import asyncio

    # off the event loop: the patterns take ~4 s per MiB of text and the encoder takes CPU time too; a
    # server's process pool runs the patterns for long texts (in a thread they would still hold the GIL)
    if executor is None:
        result = await asyncio.to_thread(_local_layers, message, history, patterns, semantic, learned)
    else:
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(executor, assess_patterns, message, history, patterns)
        if learned:
            result = await asyncio.to_thread(_with_learned, result, message, history)
        if semantic:
            result = await asyncio.to_thread(_with_semantic, result, message)
    if not model:
        return result
    try:
        verdict = await amodel_check(message, history, model)
    except ModelCheckError as exc:
        import logging

        logging.getLogger("kardia.safety").warning("%s", exc)
        return result.model_copy(update={"errors": result.errors + [str(exc)]})
    return _merge(result, verdict)


def _local_layers(message: str, history: list[dict] | None, patterns: str | None, semantic: bool, learned: bool) -> RiskAssessment:
    result = assess_patterns(message, history, patterns)
    if learned:
        result = _with_learned(result, message, history)
    if semantic:
        result = _with_semantic(result, message)
    return result


def assess(
    message: str,
    history: list[dict] | None = None,
    model: str | None = None,
    patterns: str | None = None,
    semantic: bool = False,
    learned: bool = False,
) -> RiskAssessment:
    """Classify the newest user message (with recent history): category, level and evidence.

    Layers: patterns + context always; `learned=True` adds the embedding classifier (loads a small
    encoder; the Guard, i.e. chat and serve, turns it on by default); `semantic=True` the older k-NN
    layer; `model` the model-based check. `source` and `rules` say which layer fired, `evidence` why.
    """
    if not model:
        return _local_layers(message, history, patterns, semantic, learned)

    return run_sync(aassess(message, history, model, patterns, semantic, learned))
