"""The rubric judge: prompts that isolate the data, one call or one call per dimension, text or
probability scoring, aggregation with vetoes, and panels of judges with their agreement."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from typing import Any, Literal, Sequence

from pydantic import BaseModel, Field

from ..llm import LLMError, SamplingParams
from ..llm.types import run_sync
from ..prompts import fill
from .isolate import data_block, history_text
from .parse import JudgeParseError, parse_reasons, parse_scores
from .rubric import Dimension, Rubric, load_rubric

PROBS_PREFIX = "Score: "

# Why a judgement failed, for the readers that decide what to do with it: "call" (a model call failed
# for good: a rerun may reach the model, so retry) or "parse" (the model answered, but no usable result
# came out: a rerun gives the same answer, so it is a counted failure).
ErrorKind = Literal["call", "parse"]


def legacy_error_kind(error: str | None) -> ErrorKind | None:
    """The kind of a failure recorded before `error_kind` existed, read from its old message prefix."""
    if not error:
        return None
    return "call" if error.startswith(("llm:", "LLMError")) else "parse"  # the assistant turn is opened with this; the next token is the digit


class JudgeItem(BaseModel):
    """What a judge sees: who the person is, what happened, the conversation so far, and the reply."""

    profile: str = ""
    situation: str = ""
    history: list[dict] = Field(default_factory=list)
    response: str
    emotion: str = ""  # target emotion label (shown to the data-building critic only)
    id: str | None = None


class JudgeResult(BaseModel):
    """Scores per dimension key (None on failure), reasons, the aggregated reward, or the error.

    error_kind says whether a rerun can help: "call" (a model call failed for good: retry it later) or
    "parse" (the judge answered, but no usable score came out: a counted judge failure).
    """

    scores: dict[str, float] | None = None
    reasons: dict[str, str] = Field(default_factory=dict)
    reward: float | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    vetoed: list[str] = Field(default_factory=list)
    raw: str = ""
    probs: dict[str, dict[str, float]] | None = None
    agreement: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.scores is not None


def aggregate(scores: dict[str, float], rubric: Rubric) -> tuple[float, list[str]]:
    """(reward in [0, 1], vetoing dimensions): weighted mean of (s - min) / (max - min); a veto gives 0."""
    lo, hi = rubric.scale.min, rubric.scale.max
    missing = [d.key for d in rubric.dimensions if d.key not in scores]
    if missing:
        raise KeyError(f"aggregate: scores missing for {missing}")
    vetoed = [d.key for d in rubric.dimensions if d.veto is not None and scores[d.key] <= d.veto]
    if vetoed:
        return 0.0, vetoed
    total = sum(d.weight for d in rubric.dimensions)
    value = sum(d.weight * (scores[d.key] - lo) / (hi - lo) for d in rubric.dimensions) / total
    return float(min(1.0, max(0.0, value))), []


def data_sections(item: JudgeItem, reply_label: str = "reply to evaluate") -> list[tuple[str, object]]:
    return [
        ("profile of the person", item.profile or "(no profile given)"),
        ("their situation", item.situation or "(not stated)"),
        ("conversation so far", history_text(item.history)),
        (reply_label, item.response),
    ]


def _output_example(rubric: Rubric) -> str:
    lo, hi = rubric.scale.min, rubric.scale.max
    body = ",\n".join(
        f'  "{d.key}": {{"reason": "<one sentence>", "score": <integer {lo}-{hi}>}}' for d in rubric.dimensions
    )
    return "{\n" + body + "\n}"


def _dimension_text(rubric: Rubric, d: Dimension) -> str:
    return rubric.describe([d.key])


class ModelRole:
    """What the judge, the critic and the pairwise judge share: a model loaded on first use and a scorer
    where `auto` means token probabilities on local backends, text on remote ones."""

    model: str
    cache: bool
    llm_options: dict
    _llm: Any
    _scorer: str

    @property
    def llm(self):
        if self._llm is None:
            from ..llm import load_llm

            self._llm = load_llm(self.model, cache=self.cache, **self.llm_options)
        return self._llm

    @property
    def scorer(self) -> str:
        if self._scorer == "auto":
            return "probs" if self.llm.token_probs else "text"
        return self._scorer


class Judge(ModelRole):
    """Scores `JudgeItem`s against a rubric with one model (any `kardia.llm` model string).

    mode: "single" (all dimensions in one call, JSON answer) or "per_dimension" (one call each).
    scorer: "text" (parse the answer; failures are errors), "probs" (expected score from the
    probabilities of the tokens "1".."5": local models only; continuous, never unparseable), or
    "auto" (probs when the model is local, else text).
    """

    def __init__(
        self,
        model: str = "embedded",
        rubric: str | Rubric = "kardia",
        mode: Literal["single", "per_dimension"] = "single",
        scorer: Literal["text", "probs", "auto"] = "text",
        *,
        llm=None,
        cache: bool | str = True,
        max_tokens: int | None = None,
        parse_retries: int = 1,
        llm_options: dict | None = None,
    ):
        if mode not in ("single", "per_dimension"):
            raise ValueError(f"mode must be 'single' or 'per_dimension', got {mode!r}")
        if scorer not in ("text", "probs", "auto"):
            raise ValueError(f"scorer must be 'text', 'probs' or 'auto', got {scorer!r}")
        self.model = model
        self.rubric = load_rubric(rubric)
        if self.rubric.kind != "scores":
            raise ValueError(f"rubric {self.rubric.name} is a verdict rubric: use kardia.judge.Critic")
        self.mode = mode
        self._scorer = scorer
        self._llm = llm
        self.cache = cache
        self.max_tokens = max_tokens or (160 * len(self.rubric.dimensions) + 64 if mode == "single" else 200)
        self.parse_retries = parse_retries
        self.llm_options = llm_options or {}

    # -- plumbing ---------------------------------------------------------------------------------
    def _system(self, tag: str) -> dict:
        return {"role": "system", "content": fill("judge/system", tag=tag)}

    def messages_single(self, item: JudgeItem) -> list[dict]:
        block, tag = data_block(data_sections(item))
        r = self.rubric
        user = fill(
            "judge/single",
            rubric_name=r.name,
            rubric_description=r.description.strip(),
            scale_min=r.scale.min,
            scale_max=r.scale.max,
            rubric=r.describe(),
            data=block,
            output_example=_output_example(r),
        )
        return [self._system(tag), {"role": "user", "content": user}]

    def messages_dimension(self, item: JudgeItem, d: Dimension, template: str = "judge/dimension") -> list[dict]:
        block, tag = data_block(data_sections(item))
        r = self.rubric
        user = fill(
            template,
            rubric_name=r.name,
            dimension=_dimension_text(r, d),
            scale_min=r.scale.min,
            scale_max=r.scale.max,
            data=block,
            key=d.key,
            name=d.name,
        )
        return [self._system(tag), {"role": "user", "content": user}]

    async def _ask(self, messages: list[dict], parse, max_tokens: int) -> tuple[Any, str]:
        """One call, parsed; on a parse failure, up to `parse_retries` seeded resamples. Raises last error."""
        last: Exception | None = None
        raw = ""
        for attempt in range(self.parse_retries + 1):
            params = (
                SamplingParams(max_tokens=max_tokens, temperature=0.0)
                if attempt == 0
                else SamplingParams(max_tokens=max_tokens, temperature=0.7, seed=attempt)
            )
            comp = await self.llm.achat(messages, params)
            raw = comp.text
            try:
                return parse(raw), raw
            except JudgeParseError as exc:
                last = exc
        assert last is not None
        raise JudgeParseError(f"{last} [after {self.parse_retries + 1} attempt(s)]", ) from None

    # -- scoring ----------------------------------------------------------------------------------
    async def ascore(self, item: JudgeItem | dict) -> JudgeResult:
        """Score one item; a failure (model error or unreadable answer) is an `error`, never a score."""
        item = item if isinstance(item, JudgeItem) else JudgeItem.model_validate(item)
        dims = self.rubric.dimensions
        try:
            if self.scorer == "probs":
                return await self._score_probs(item)
            if self.mode == "single":
                msgs = self.messages_single(item)
                scores, raw = await self._ask(msgs, lambda t: parse_scores(t, dims, self._scale()), self.max_tokens)
                reasons = parse_reasons(raw, dims)
            else:
                outs = await asyncio.gather(
                    *(
                        self._ask(self.messages_dimension(item, d), lambda t, d=d: parse_scores(t, [d], self._scale()), self.max_tokens)
                        for d in dims
                    ),
                    return_exceptions=True,
                )
                errors = [f"{d.key}: {o}" for d, o in zip(dims, outs) if isinstance(o, BaseException)]
                for o in outs:
                    if isinstance(o, BaseException) and not isinstance(o, (JudgeParseError, LLMError)):
                        raise o
                if errors:
                    raw_parts = [o[1] for o in outs if not isinstance(o, BaseException)]
                    kind = "call" if any(isinstance(o, LLMError) for o in outs) else "parse"
                    return JudgeResult(error="; ".join(errors), error_kind=kind, raw="\n---\n".join(raw_parts))
                scores = {}
                reasons = {}
                raws = []
                for d, (s, raw_d) in zip(dims, outs):  # type: ignore[misc]
                    scores.update(s)
                    raws.append(raw_d)
                    r = parse_reasons(raw_d, [d])
                    if d.key in r:
                        reasons[d.key] = r[d.key]
                raw = "\n---\n".join(raws)
        except JudgeParseError as exc:
            return JudgeResult(error=f"parse: {exc}", error_kind="parse")
        except LLMError as exc:
            return JudgeResult(error=f"llm: {exc}", error_kind="call")
        fscores = {k: float(v) for k, v in scores.items()}
        reward, vetoed = aggregate(fscores, self.rubric)
        return JudgeResult(scores=fscores, reasons=reasons, reward=reward, vetoed=vetoed, raw=raw)

    def _scale(self) -> tuple[int, int]:
        return (self.rubric.scale.min, self.rubric.scale.max)

    async def _score_probs(self, item: JudgeItem) -> JudgeResult:
        if not self.llm.token_probs:
            raise ValueError(f"scorer='probs' needs a local model (embedded or a folder); {self.model!r} has no token probabilities")
        lo, hi = self._scale()
        cands = [str(i) for i in range(lo, hi + 1)]
        if any(len(c) != 1 for c in cands):
            raise ValueError("scorer='probs' needs a single-digit scale")
        dims = self.rubric.dimensions
        batch = [self.messages_dimension(item, d, template="judge/probs") for d in dims]
        # the dimensions' prompts share the data block: one pass over it
        probs = await self.llm.anext_token_probs_shared(batch, cands, PROBS_PREFIX)
        scores = {d.key: sum(int(c) * p[c] for c in cands) for d, p in zip(dims, probs)}
        reward, vetoed = aggregate(scores, self.rubric)
        return JudgeResult(
            scores=scores, reward=reward, vetoed=vetoed, probs={d.key: p for d, p in zip(dims, probs)}
        )

    async def ascore_many(self, items: Sequence[JudgeItem | dict]) -> list[JudgeResult]:
        """All items at once: the backend batches (local) or runs them concurrently (HTTP)."""
        return list(await asyncio.gather(*(self.ascore(i) for i in items)))

    def score(self, item: JudgeItem | dict) -> JudgeResult:
        return run_sync(self.ascore(item))

    def score_many(self, items: Sequence[JudgeItem | dict]) -> list[JudgeResult]:
        return run_sync(self.ascore_many(items))


class Panel:
    """Several judges on the same items, combined per dimension by mean, median or majority.

    Each result carries `agreement`: per dimension, the share of judges whose (rounded) score equals
    the panel's (rounded) score, their spread, and how many judges answered. Fewer valid judges
    than `min_valid` (default: more than half) is a failure, never a partial score.
    """

    def __init__(self, judges: Sequence[Judge], method: Literal["mean", "median", "majority"] = "mean", min_valid: int | None = None):
        if not judges:
            raise ValueError("a panel needs at least one judge")
        if method not in ("mean", "median", "majority"):
            raise ValueError(f"method must be mean, median or majority, got {method!r}")
        self.judges = list(judges)
        self.method = method
        self.rubric = judges[0].rubric
        for j in judges[1:]:
            if j.rubric.keys != self.rubric.keys:
                raise ValueError("all judges of a panel must use rubrics with the same dimensions")
        self.min_valid = min_valid if min_valid is not None else len(self.judges) // 2 + 1

    async def ascore(self, item: JudgeItem | dict) -> JudgeResult:
        results = await asyncio.gather(*(j.ascore(item) for j in self.judges))
        return self.combine(results)

    def combine(self, results: Sequence[JudgeResult]) -> JudgeResult:
        valid = [r for r in results if r.ok]
        errors = [f"judge {i}: {r.error}" for i, r in enumerate(results) if not r.ok]
        if len(valid) < self.min_valid:
            # a failed call among the missing judges may answer on a retry
            kind = "call" if any(r.error_kind == "call" for r in results if not r.ok) else "parse"
            return JudgeResult(
                error=f"only {len(valid)} of {len(results)} judges answered (need {self.min_valid}): " + "; ".join(errors),
                error_kind=kind,
            )
        scores: dict[str, float] = {}
        per_dim: dict[str, dict] = {}
        problems = []
        for key in self.rubric.keys:
            vals = [r.scores[key] for r in valid]  # type: ignore[index]
            if self.method == "mean":
                value = statistics.fmean(vals)
            elif self.method == "median":
                value = float(statistics.median(vals))
            else:
                counts = Counter(round(v) for v in vals).most_common()
                if len(counts) > 1 and counts[0][1] == counts[1][1]:
                    problems.append(f"{key}: no majority among {sorted(round(v) for v in vals)}")
                    continue
                value = float(counts[0][0])
            scores[key] = value
            agree = sum(1 for v in vals if round(v) == round(value)) / len(vals)
            per_dim[key] = {"agreement": agree, "spread": max(vals) - min(vals), "scores": vals}
        agreement = {
            "n_judges": len(results),
            "n_valid": len(valid),
            "per_dimension": per_dim,
            "mean": statistics.fmean(p["agreement"] for p in per_dim.values()) if per_dim else None,
        }
        if problems:  # the judges answered and disagree: a rerun gives the same answers
            return JudgeResult(error="; ".join(problems), error_kind="parse", agreement=agreement)
        reward, vetoed = aggregate(scores, self.rubric)
        reasons = {}
        for r in valid:
            for k, v in r.reasons.items():
                reasons.setdefault(k, v)
        return JudgeResult(scores=scores, reasons=reasons, reward=reward, vetoed=vetoed, agreement=agreement)

    async def ascore_many(self, items: Sequence[JudgeItem | dict]) -> list[JudgeResult]:
        return list(await asyncio.gather(*(self.ascore(i) for i in items)))

    def score_many(self, items: Sequence[JudgeItem | dict]) -> list[JudgeResult]:
        return run_sync(self.ascore_many(items))


def result_record(item_id: Any, result: JudgeResult) -> dict:
    """The per-item line written by `kardia judge score` and calibration."""
    return {
        "id": item_id,
        "scores": result.scores,
        "reward": result.reward,
        "reasons": result.reasons,
        "vetoed": result.vetoed,
        "error": result.error,
        "error_kind": result.error_kind,
        **({"agreement": result.agreement} if result.agreement else {}),
    }


__all__ = ["JudgeItem", "JudgeResult", "Judge", "Panel", "aggregate", "result_record"]
