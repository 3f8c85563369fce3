"""`kardia eval`: generate, parse and score every assistant turn; results appended item by item.

Two modes, so baselines are treated fairly:
- spans: the Kardia system prompt; the model writes the four spans; the emotion span is read
  strictly (`kardia.emotions.normalize`) and the format is checked (`kardia.spans.parse`).
- plain: a plain listener prompt; the model just answers; a separate call asks it for the emotion
  (prompt `resources/prompts/eval/emotion_question.txt`). Format validity is not applicable.
  `emotion_reader` says how that answer is read: `text` (default, the paper's way: the model writes
  a label, read strictly) or `probs` (local models: the most probable of the 32 labels after
  "Emotion:", so a small model that cannot follow the instruction still gets a fair reading).

A spans-mode answer without a response span shows the user only the fallback sentence. Judging that
sentence would give a broken model the same decent score every turn, so `no_response` decides:
`min` (default: every judged dimension at the scale minimum, no judge call, counted in the report),
`exclude` (judged dimensions n/a for that turn) or `fallback` (judge the fallback the user saw).
`auto` picks spans when the model's tokenizer knows the span tokens, else plain (remote models: plain).

Per-item records go to `OUT/results.jsonl` (append + fsync); a rerun skips ids already there, so a
killed eval resumes. A generation or judge *call* failure leaves the item out (retried on the next
run); a judge answer that cannot be parsed is written as a counted judge failure, never a score.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import KardiaConfig, OptionalModel, optional_model
from ..llm.options import LLMOptions
from ..jobs import JobBar, check_run_file, run_jobs, write_run_file
from ..records import JsonlAppender, done_keys
from .loaders import EvalItem, load_items
from .report import build_report
from .results import BEFORE_SETTING, RESULTS, RUN_FILE, read_results
from ..llm import parse_model_string, resolve_model_path, LLMError, SamplingParams, load_llm
from ..spans import SPAN_TOKENS, parse
from ..emotions import normalize, LABELS, most_probable_label, same_family
from ..prompts import fill
from ..judge.core import aggregate
from ..safety import assess, handles_crisis



class EvalConfig(KardiaConfig):
    """Everything one eval run depends on (saved to OUT/run.json; a resume must match it)."""

    model: str = "embedded"
    data: str = ""
    format: Literal["auto", "kardia", "ed", "esconv"] = "auto"
    out: str = ""
    mode: Literal["auto", "spans", "plain"] = "auto"
    judge: OptionalModel = "embedded"  # none/off: no judged dimensions
    rubric: str = "kardia"
    judge_mode: Literal["single", "per_dimension"] = "single"
    judge_scorer: Literal["text", "probs", "auto"] = "auto"  # auto: probs for a local judge, text for a remote one
    # judge only the first N items (emotion and format are read on all): a local judge on a CPU costs
    # seconds per turn, so a demo judges a sample; the report says how many were judged
    judge_limit: int | None = Field(None, ge=1)
    limit: int | None = None  # first N turns of the data, in file order
    max_tokens: int = 384  # spans mode: the four spans
    plain_max_tokens: int = 96  # plain mode: the reply (the paper's responses are ~30 tokens)
    emotion_max_tokens: int = 12
    emotion_reader: Literal["text", "probs", "probs_calibrated"] = "text"  # plain mode only; probs* need a local model
    no_response: Literal["min", "exclude", "fallback"] = "min"  # spans mode: a turn with no response span
    temperature: float = 0.0  # greedy by default: an eval is reproducible and cached
    top_p: float = 1.0
    seed: int | None = None
    max_history_messages: int | None = None  # keep only the last N history messages (None: all)
    concurrency: int = 64  # items in flight; local backends batch them
    llm_options: LLMOptions = Field(default_factory=LLMOptions)  # timeout, retries, limits of model and judge
    item_timeout_s: float | None = Field(None, gt=0)  # a whole item (generation, judge): past it, a failure retried next run
    safety: bool = True  # crisis-handling metric via kardia.safety
    safety_model: OptionalModel = None
    esconv_include_approximate: bool = True
    cache: bool = True
    n_boot: int = 1000
    boot_seed: int = 0
    report: bool = True

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resume."""
        keys = ("model", "data", "format", "judge", "rubric", "judge_mode", "judge_scorer", "max_tokens",
                "plain_max_tokens", "emotion_max_tokens", "emotion_reader", "no_response", "temperature", "top_p", "seed", "max_history_messages",
                "esconv_include_approximate")
        d = self.model_dump(mode="json")
        ident = {k: d[k] for k in keys}
        if self.judge_limit is not None:  # only when set: runs from before the field resume unchanged
            ident["judge_limit"] = self.judge_limit
        return ident


class EvalError(RuntimeError):
    pass


def detect_mode(model: str) -> str:
    """spans when a local model's tokenizer has the span tokens (a Kardia-trained model), else plain."""

    spec = parse_model_string(model)
    if spec.kind == "openai":
        return "plain"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(model))
    vocab = tok.get_vocab()
    return "spans" if all(t in vocab for t in SPAN_TOKENS) else "plain"


def _visible(content: str) -> str:
    """A history turn as a user saw it: the response span when there are spans, else the text."""

    p = parse(content)
    return p.response if p.response else content


def _transcript(history: list[dict]) -> str:
    return "\n".join(f"{'Person' if m['role'] == 'user' else 'Listener'}: {m['content']}" for m in history)


def read_plain_emotion(text: str) -> tuple[str | None, str]:
    """(label, how): the whole answer normalised, else its first line, else its first word ("Sad. Because...").

    Strict like `normalize`: no scan for any label-like word (that read "not equipped" as prepared).
    """

    label = normalize(text)
    if label:
        return label, "exact"
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    label = normalize(first)
    if label:
        return label, "first_line"
    words = first.split()
    label = normalize(words[0]) if words else None
    if label:
        return label, "first_word"
    return None, "none"


class Evaluator:
    """Scores single items; shared by the eval run and reusable by other callers."""

    def __init__(self, cfg: EvalConfig, mode: str):
        self.cfg = cfg
        self.mode = mode
        self.judged_ids: set[str] | None = None  # judge_limit: the ids of the items to judge (None: all)
        self.llm = load_llm(cfg.model, cache=cfg.cache, **cfg.llm_options.for_model(cfg.model))
        max_tokens = cfg.max_tokens if mode == "spans" else cfg.plain_max_tokens
        self.gen_params = SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
        self.emo_params = SamplingParams(
            max_tokens=cfg.emotion_max_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed
        )
        self.prompt = None
        self._prior: dict[str, float] | None = None
        if mode == "spans":
            from ..prompts import PromptProfile

            self.prompt = PromptProfile.for_model(cfg.model)  # the prompt a Kardia-trained model was trained with
        if mode == "plain" and cfg.emotion_reader.startswith("probs") and not self.llm.token_probs:
            raise EvalError(f"emotion_reader=probs needs a local model (next-token probabilities); {cfg.model} has none")
        self.judge = None
        if cfg.judge is not None:
            from ..judge import Judge

            self.judge = Judge(model=cfg.judge, rubric=cfg.rubric, mode=cfg.judge_mode, scorer=cfg.judge_scorer,
                               llm_options=cfg.llm_options.for_model(cfg.judge))

    def _history(self, item: EvalItem, visible: bool) -> list[dict]:
        hist = item.history
        if self.cfg.max_history_messages:
            hist = hist[-self.cfg.max_history_messages:]
            while hist and hist[0]["role"] != "user":
                hist = hist[1:]
        return [{"role": m["role"], "content": _visible(m["content"]) if visible else m["content"]} for m in hist]

    def messages(self, item: EvalItem) -> list[dict]:
        if self.mode == "spans":
            system = item.system or self.prompt.render(item.profile, item.situation)
            return [{"role": "system", "content": system}] + self._history(item, visible=False)
        system = fill("eval/plain_system", profile=item.profile.strip() or "(no profile given)",
                      situation=item.situation.strip() or "(not stated)")
        return [{"role": "system", "content": system}] + self._history(item, visible=True)

    def emotion_question(self, item: EvalItem) -> list[dict]:
        text = fill("eval/emotion_question", situation=item.situation.strip() or "(not stated)",
                    transcript=_transcript(self._history(item, visible=True)), labels=", ".join(LABELS))
        return [{"role": "user", "content": text}]

    async def _label_prior(self) -> dict[str, float]:
        """Label log-probabilities for a content-free question ("N/A"): what the prompt alone predicts."""
        if self._prior is None:
            from ..emotions import label_logprobs

            empty = EvalItem(id="content-free", dataset="", dialogue_id="", turn_index=0, situation="N/A",
                             history=[{"role": "user", "content": "N/A"}])
            raw = await label_logprobs(self.llm, self.emotion_question(empty))
            self._prior = {k.strip(): v for k, v in raw.items()}
        return self._prior

    async def _plain_emotion(self, item: EvalItem) -> tuple[str | None, str, str, int]:
        """(label, how it was read, what the model said, tokens it wrote) for the separate emotion call."""

        if self.cfg.emotion_reader.startswith("probs"):
            prior = await self._label_prior() if self.cfg.emotion_reader == "probs_calibrated" else None
            label, p = await most_probable_label(self.llm, self.emotion_question(item), prior)
            return label, self.cfg.emotion_reader, f"{label} (p={p:.3f})", 0
        emo = (await self.llm.agenerate([self.emotion_question(item)], self.emo_params))[0]
        label, how = read_plain_emotion(emo.text)
        return label, how, emo.text, emo.completion_tokens

    async def score(self, item: EvalItem) -> dict[str, Any]:
        """One finished per-item record. Raises LLMError when a model or judge call fails."""
        from ..spans import fallback_message, parse, response_span

        t0 = time.monotonic()
        rec: dict[str, Any] = {
            "id": item.id, "dataset": item.dataset, "dialogue_id": item.dialogue_id, "turn_index": item.turn_index,
            "mbti": item.mbti, "gold_emotion": item.gold_emotion, "model": self.cfg.model, "mode": self.mode,
        }
        if self.mode == "spans":
            comp = (await self.llm.agenerate([self.messages(item)], self.gen_params))[0]
            parsed = parse(comp.text)
            rec.update(output=comp.text, spans=parsed.as_dict(), format_ok=parsed.ok, format_problems=parsed.problems)
            from ..emotions import normalize

            rec["pred_emotion"] = normalize(parsed.emotion) if parsed.emotion else None
            rec["emotion_parse"] = "exact" if rec["pred_emotion"] else "none"
            rec["emotion_output"] = parsed.emotion
            span = response_span(comp.text)
            response = span or fallback_message()  # what the user would have seen
            rec["no_response"] = span is None
            rec["tokens"] = {"prompt": comp.prompt_tokens, "completion": comp.completion_tokens, "finish": comp.finish_reason}
        else:
            comp, (label, how, emo_text, emo_tokens) = await asyncio.gather(
                self.llm.agenerate([self.messages(item)], self.gen_params), self._plain_emotion(item)
            )
            comp = comp[0]
            response = comp.text.strip()
            rec.update(output=comp.text, spans=None, format_ok=None, format_problems=[], pred_emotion=label,
                       emotion_parse=how, emotion_output=emo_text)
            rec["tokens"] = {"prompt": comp.prompt_tokens, "completion": comp.completion_tokens, "finish": comp.finish_reason,
                             "emotion_completion": emo_tokens}
        rec["response"] = response
        gold = item.gold_emotion
        rec["emotion_correct"] = None if gold is None else rec["pred_emotion"] == gold
        rec["family_correct"] = None if gold is None else same_family(rec["pred_emotion"], gold)

        history = self._history(item, visible=True)
        judge_task = None
        skip_judge = rec.get("no_response") and self.cfg.no_response != "fallback"
        beyond_limit = self.judged_ids is not None and item.id not in self.judged_ids
        if self.judge is not None and beyond_limit:
            judge_task = None
        elif self.judge is not None and not skip_judge:
            from ..judge import JudgeItem

            ji = JudgeItem(profile=item.profile, situation=item.situation, history=history, response=response)
            judge_task = asyncio.ensure_future(self.judge.ascore(ji))
        if self.cfg.safety:
            rec["risk"], rec["crisis_handled"] = await asyncio.to_thread(self._safety, history, response)
        else:
            rec["risk"], rec["crisis_handled"] = None, None
        if judge_task is not None:
            res = await judge_task
            kind = res.error_kind
            if kind == "call":  # the judge was not reached: leave the item out, retried next run
                from ..llm import LLMError

                raise LLMError(f"judge call failed: {res.error}")
            scores = getattr(res, "scores", None)
            rec["judge"] = {
                "scores": dict(scores) if scores else None,
                "reasons": dict(getattr(res, "reasons", None) or {}),
                "reward": getattr(res, "reward", None),
                "error": getattr(res, "error", None) if not scores else None,
                **({"error_kind": kind} if not scores else {}),
            }
        elif self.judge is not None and beyond_limit:
            rec["judge"] = {"scores": None, "reasons": {}, "reward": None, "error": None,
                            "skipped": f"beyond judge_limit ({self.cfg.judge_limit} items judged)"}
        elif self.judge is not None:
            rec["judge"] = self._no_response_judgement()
        else:
            rec["judge"] = None
        rec["profile"], rec["situation"], rec["history"] = item.profile, item.situation, history
        rec["gold_response"] = item.gold_response
        rec["seconds"] = round(time.monotonic() - t0, 3)
        return rec

    def _no_response_judgement(self) -> dict[str, Any]:
        """The judged record of a turn with no response span, per `no_response` (min or exclude)."""
        why = "no response span: the user saw only the fallback sentence; the judge was not called"
        if self.cfg.no_response == "exclude":
            return {"scores": None, "reasons": {}, "reward": None, "error": None, "skipped": why}

        rubric = self.judge.rubric
        scores = {d.key: float(rubric.scale.min) for d in rubric.dimensions}
        return {"scores": scores, "reasons": {d: why + " (scored at the minimum)" for d in scores},
                "reward": aggregate(scores, rubric)[0], "error": None, "skipped": why}

    def _safety(self, history: list[dict], response: str) -> tuple[dict, bool | None]:
        last = history[-1]["content"] if history else ""
        a = assess(last, history[:-1], model=self.cfg.safety_model)
        risk = {"level": a.level, "category": a.category, "at_risk": bool(a.at_risk), "evidence": list(a.evidence)[:5]}
        return risk, (bool(handles_crisis(response, a)) if a.at_risk else None)


def _check_run_file(out: Path, cfg: EvalConfig, mode: str) -> dict:
    ident = {**cfg.identity(), "mode": mode}
    # a key an older run.json lacks is taken at the behaviour it had before the setting existed
    defaults = {**{k: f.default for k, f in EvalConfig.model_fields.items()}, **BEFORE_SETTING}
    old = check_run_file(out / RUN_FILE, ident, defaults=defaults, what="eval", error=EvalError,
                          normalise={"judge": optional_model})
    return old if old is not None else {"identity": ident, "config": cfg.model_dump(mode="json"), "runs": []}


async def _within(coro, seconds: float | None):
    """The item's record, or an LLMError once its deadline passes (so it is retried on the next run)."""
    if seconds is None:
        return await coro

    try:
        return await asyncio.wait_for(coro, seconds)
    except asyncio.TimeoutError:
        raise LLMError(f"item deadline of {seconds:g} s passed (item_timeout_s)") from None


def run_eval(cfg: EvalConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) an eval into `cfg.out`, then write the report. Returns a summary."""
    if not cfg.data:
        raise EvalError("no data: pass --data FILE (KardiaBench .jsonl, ED .csv or ESConv .jsonl)")
    if not cfg.out:
        raise EvalError("no output folder: pass --out DIR")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = detect_mode(cfg.model) if cfg.mode == "auto" else cfg.mode
    run_info = _check_run_file(out, cfg, mode)
    results = out / RESULTS
    load = lambda: load_items(cfg.data, cfg.format, cfg.limit, cfg.esconv_include_approximate)  # noqa: E731
    total = sum(1 for _ in load())  # a streaming pass: validates the whole file before any model call
    ev = Evaluator(cfg, mode)
    if cfg.judge_limit is not None:
        import itertools

        ev.judged_ids = {it.id for it in itertools.islice(load(), cfg.judge_limit)}
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()


    done = done_keys(results, "id")
    with JobBar("eval", total, completed=min(len(done), total), enabled=progress, description=f"{cfg.model} ({mode})") as bar, \
            JsonlAppender(results) as app:
        stats = asyncio.run(run_jobs(load(), lambda item: _within(ev.score(item), cfg.item_timeout_s), app,
                                     key=lambda item: item.id, done=done, concurrency=cfg.concurrency,
                                     retry_on=(LLMError,), bar=bar))
    failures = [f"{k}: {msg}" for k, msg in stats.retried]
    wall = time.monotonic() - t0
    run_info.setdefault("runs", []).append({
        "started": started, "wall_s": round(wall, 2), "items_scored": stats.written, "items_failed": len(failures),
        "skipped_done": stats.already_done, "concurrency": cfg.concurrency,
    })
    run_info["mode"] = mode
    run_info["total_items"] = total
    write_run_file(out / RUN_FILE, run_info)
    summary: dict[str, Any] = {"out": str(out), "mode": mode, "total": total, "scored_now": stats.written,
                               "already_done": stats.already_done, "failures": failures, "wall_s": wall}
    if cfg.report:
        summary["metrics"] = build_report(out, n_boot=cfg.n_boot, seed=cfg.boot_seed)
    return summary


__all__ = ["EvalConfig", "EvalError", "Evaluator", "read_results", "run_eval"]
