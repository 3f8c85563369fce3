"""Rewards in TRL's contract: `f(completions, **columns) -> list[float | None]`.

- `format_reward`: 1 when the four spans parse (`kardia.spans.parse(...).ok`), else 0.
- `emotion_reward`: 1 when the normalised emotion span equals the gold `emotion` column, else 0.
- `make_rubric_reward(...)`: an async callable judging every completion of a batch concurrently
  through `kardia.llm` (cached); a judge failure is None for that sample (TRL excludes it) and is
  counted, never 0.
- `make_kardia_reward(...)`: the paper's r = 1/3 format + 1/3 emotion + 1/3 rubric, weights and
  gating (no rubric credit, and no judge call, without valid format) configurable.

Completions may be plain strings or conversational (a list of {"role", "content"} dicts). Each
function reports its per-dimension means and failure counts through TRL's `log_metric` when the
trainer passes it (TRL >= 1.x: `log_metric(name, value)`, averaged per logging step).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Sequence

from .llm.types import run_sync
from .spans import parse
from .emotions import normalize
from .judge import JudgeItem

Completion = str | list | dict


def completion_text(completion: Completion) -> str:
    """The generated text of a plain or conversational completion (assistant turns joined)."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        parts = [_content(m.get("content", "")) for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return "\n".join(p for p in parts if p)
    return str(completion)


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: [{"type": "text", "text": ...}]
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def _log(kwargs: dict, name: str, value: float | None) -> None:
    fn = kwargs.get("log_metric")
    if fn is not None and value is not None and not (isinstance(value, float) and math.isnan(value)):
        fn(name, float(value))


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


# -- format --------------------------------------------------------------------------------------
def format_reward(completions: Sequence[Completion], **kwargs) -> list[float | None]:
    """1.0 when all four spans are present, in order and non-empty; else 0.0."""

    out = [1.0 if parse(completion_text(c)).ok else 0.0 for c in completions]
    _log(kwargs, "format_reward/valid_rate", _mean(out))
    return out


# -- emotion -------------------------------------------------------------------------------------
def emotion_reward(completions: Sequence[Completion], emotion: Sequence[str | None] | None = None, **kwargs) -> list[float | None]:
    """1.0 when the emotion span, normalised, equals the gold label; 0.0 otherwise; None when a
    sample has no gold label. A gold label that is not one of the 32 is a data error (raised)."""

    if emotion is None:
        raise ValueError("emotion_reward needs the gold `emotion` column in the dataset")
    if len(emotion) != len(completions):
        raise ValueError(f"emotion_reward: {len(completions)} completions but {len(emotion)} gold labels")
    out: list[float | None] = []
    unreadable = 0
    for c, gold in zip(completions, emotion):
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            out.append(None)
            continue
        gold_label = normalize(gold)
        if gold_label is None:
            raise ValueError(f"emotion_reward: gold label {gold!r} is not one of the 32 emotion labels")
        span = parse(completion_text(c)).emotion
        predicted = normalize(span) if span else None
        if predicted is None:
            unreadable += 1
        out.append(1.0 if predicted == gold_label else 0.0)
    _log(kwargs, "emotion_reward/accuracy", _mean(out))
    _log(kwargs, "emotion_reward/unreadable", float(unreadable))
    return out


# -- rubric --------------------------------------------------------------------------------------
def _column(kwargs: dict, names: Sequence[str], i: int) -> Any:
    for n in names:
        col = kwargs.get(n)
        if col is not None and i < len(col):
            return col[i]
    return None


def judge_item_for(completion: Completion, i: int, kwargs: dict):
    """The JudgeItem for sample i: profile, situation and history from the dataset columns; the
    reply is the completion's response span, or (broken format) its whole text without markup, so a
    broken answer is judged on what it actually wrote, never on a friendly fallback."""
    from .spans import parse, strip_span_markup

    text = completion_text(completion)
    parsed = parse(text)
    response = parsed.response if parsed.response else strip_span_markup(text)
    prompt = kwargs.get("prompts") or kwargs.get("prompt")
    history: list[dict] = []
    p = prompt[i] if prompt is not None and i < len(prompt) else None
    if isinstance(p, str):
        history = [{"role": "user", "content": p}]
    elif isinstance(p, (list, tuple)):
        history = [dict(m) for m in p if isinstance(m, dict) and m.get("role") != "system"]
    else:
        h = _column(kwargs, ("history",), i)
        if isinstance(h, list):
            history = [dict(m) for m in h]
    profile = _column(kwargs, ("person", "profile"), i) or ""
    situation = _column(kwargs, ("situation",), i) or ""
    return JudgeItem(profile=str(profile), situation=str(situation), history=history, response=response)


class RubricReward:
    """Async TRL reward: judges a whole batch concurrently; failures are None and counted."""

    def __init__(self, judge, name: str = "rubric_reward"):
        self.judge = judge
        self.__name__ = name
        self.calls = 0
        self.samples = 0
        self.failures = 0
        self.last_errors: list[str] = []
        self.last_metrics: dict[str, float] = {}

    async def score(self, completions: Sequence[Completion], **kwargs):
        """Per-sample JudgeResults (for callers that want scores and reasons, not just rewards)."""
        items = [judge_item_for(c, i, kwargs) for i, c in enumerate(completions)]
        return await self.judge.ascore_many(items)

    async def __call__(self, completions: Sequence[Completion], **kwargs) -> list[float | None]:
        results = await self.score(completions, **kwargs)
        rewards = [r.reward if r.ok else None for r in results]
        self._account(results, kwargs)
        return rewards

    def _account(self, results, kwargs: dict, prefix: str | None = None) -> None:
        prefix = prefix or self.__name__
        failed = [r for r in results if not r.ok]
        self.calls += 1
        self.samples += len(results)
        self.failures += len(failed)
        self.last_errors = [r.error or "" for r in failed][:5]
        metrics: dict[str, float] = {"failures": float(len(failed)), "failure_rate": len(failed) / max(1, len(results))}
        ok = [r for r in results if r.ok]
        if ok:
            for key in self.judge.rubric.keys:
                metrics[key] = statistics.fmean(r.scores[key] for r in ok)
            metrics["vetoed"] = float(sum(1 for r in ok if r.vetoed))
        self.last_metrics = {f"{prefix}/{k}": v for k, v in metrics.items()}
        for k, v in self.last_metrics.items():
            _log(kwargs, k, v)

    def sync(self, completions: Sequence[Completion], **kwargs) -> list[float | None]:
        """For callers without an event loop (ms-swift ORM, scripts)."""
        return run_sync(self(completions, **kwargs))


def make_rubric_reward(
    judge_model: str = "embedded",
    rubric: str = "kardia",
    mode: str = "single",
    scorer: str = "auto",
    *,
    judge=None,
    name: str = "rubric_reward",
    cache: bool | str = True,
    **judge_options,
) -> RubricReward:
    """An async rubric reward. `judge` may be any object with `ascore_many` and `rubric` (e.g. a
    `kardia.judge.Panel`); otherwise a `Judge(judge_model, rubric, mode, scorer)` is made lazily."""
    if judge is None:
        from .judge import Judge

        judge = Judge(judge_model, rubric=rubric, mode=mode, scorer=scorer, cache=cache, **judge_options)  # type: ignore[arg-type]
    return RubricReward(judge, name=name)


class KardiaReward:
    """r = w_format * format + w_emotion * emotion + w_rubric * rubric (paper: 1/3 each).

    gate=True: a completion without valid format gets no rubric credit and costs no judge call.
    A judge failure (or a missing gold emotion) makes that sample's reward None: excluded, counted.
    """

    def __init__(self, rubric_reward: RubricReward, weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3), gate: bool = False, name: str = "kardia_reward"):
        if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be three non-negative numbers (format, emotion, rubric), got {weights}")
        self.rubric = rubric_reward
        self.weights = tuple(float(w) for w in weights)
        self.gate = gate
        self.__name__ = name
        self.failures = 0

    async def __call__(self, completions: Sequence[Completion], **kwargs) -> list[float | None]:
        quiet = {k: v for k, v in kwargs.items() if k != "log_metric"}
        fmt = format_reward(completions, **quiet)
        if self.weights[1] > 0:
            emo = emotion_reward(completions, kwargs.get("emotion"), **{k: v for k, v in quiet.items() if k != "emotion"})
        else:
            emo = [0.0] * len(completions)
        need = [i for i, f in enumerate(fmt) if not (self.gate and f == 0.0)] if self.weights[2] > 0 else []
        rub: list[float | None] = [0.0] * len(completions)
        if need:
            sub_kwargs = {k: ([v[i] for i in need] if isinstance(v, (list, tuple)) and len(v) == len(completions) else v) for k, v in quiet.items()}
            results = await self.rubric.score([completions[i] for i in need], **sub_kwargs)
            self.rubric._account(results, kwargs, prefix=f"{self.__name__}/rubric")
            for i, r in zip(need, results):
                rub[i] = r.reward if r.ok else None
        out: list[float | None] = []
        for f, e, r in zip(fmt, emo, rub):
            if e is None or r is None or f is None:
                out.append(None)
                continue
            out.append(self.weights[0] * f + self.weights[1] * e + self.weights[2] * r)
        self.failures += sum(1 for i in need if rub[i] is None)
        _log(kwargs, f"{self.__name__}/format", _mean(fmt))
        if self.weights[1] > 0:
            _log(kwargs, f"{self.__name__}/emotion", _mean(emo))
        _log(kwargs, f"{self.__name__}/rubric", _mean([rub[i] for i in need]) if need else None)
        _log(kwargs, f"{self.__name__}/gated", float(len(completions) - len(need)) if self.weights[2] > 0 else None)
        return out

    def sync(self, completions: Sequence[Completion], **kwargs) -> list[float | None]:
        return run_sync(self(completions, **kwargs))


def make_kardia_reward(
    judge_model: str = "embedded",
    weights: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
    gate: bool = False,
    *,
    rubric: str = "kardia",
    mode: str = "single",
    scorer: str = "auto",
    judge=None,
    name: str = "kardia_reward",
    cache: bool | str = True,
    **judge_options,
) -> KardiaReward:
    rr = make_rubric_reward(judge_model, rubric, mode, scorer, judge=judge, name=f"{name}/rubric", cache=cache, **judge_options)
    return KardiaReward(rr, weights=weights, gate=gate, name=name)


RewardFn = Callable[..., Any]
__all__ = [
    "completion_text",
    "format_reward",
    "emotion_reward",
    "make_rubric_reward",
    "make_kardia_reward",
    "RubricReward",
    "KardiaReward",
    "judge_item_for",
]
