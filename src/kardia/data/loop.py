"""One dialogue, made by three roles: U (user simulator), A (responder), R (rubric critic).

Per exchange: U writes the next user turn; A drafts the four spans; R grades the draft FAIL / PASS /
SOLVED; on FAIL, A revises with the critique (at most `max_revisions` times); SOLVED ends the
dialogue; at most `max_exchanges` exchanges. Every user turn, draft and critique goes to the trace.

Small models do not follow the four-span format from a prompt, so the responder has two modes:
- `guided` (default): the format is made by construction. Understanding, reasoning and response are
  each one short call with its own prompt (cut at the first newline); the emotion is CHOSEN among the 32
  labels, from next-token probabilities on local backends (never unparseable) or, on remote ones,
  by normalising the text (a non-label is counted and retried, then left for the filter to drop);
  the spans are assembled with `kardia.spans.render`.
- `single`: one call under the shared system prompt, for strong remote models; parsed with
  `kardia.spans.parse` (a broken answer is kept, counted and later dropped by the structure filter).

A critic answer that cannot be parsed is counted (`meta.critic_unparsed`) and handled by the
documented `critic_unparsed` policy (default "fail": the draft is revised); it never counts as a
verdict in the difficulty split.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from ..llm import LLMError, SamplingParams, load_llm
from .config import BuildConfig
from .plan import PlanItem
from ..spans import strip_span_markup, visible_response, parse, render
from ..emotions import LABELS, most_probable_label, normalize
from .filters import identity_patterns, copies_turn, cut_to_sentence
from ..judge import Critic, JudgeItem
from ..prompts import clip_words, fill, system_prompt

VERDICTS = ("FAIL", "PASS", "SOLVED")
_ROLE_PREFIX = re.compile(
    r"^\s*(?:\*\*)?(?:person|user|me|you|listener|supporter|assistant|understanding|reasoning|response|reply|"
    r"emotion|message|answer|explanation|description|they mean|why and what helps|mbti|smol\w*|ai)\s*(?:\*\*)?\s*:\s*",
    re.I,
)


class RoleFailed(RuntimeError):
    """A role's model kept failing: the run stops with this message (never a silent gap)."""


class DialogueFailed(RuntimeError):
    """One dialogue could not be finished (a call failed for good); it is retried on the next run."""


@dataclass
class RoleHealth:
    """Consecutive failures per role, shared by all dialogues of a run."""

    limit: int
    consecutive: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)

    def ok(self, role: str) -> None:
        self.consecutive[role] = 0

    def failed(self, role: str, model: str, error: str) -> None:
        self.consecutive[role] = self.consecutive.get(role, 0) + 1
        self.total[role] = self.total.get(role, 0) + 1
        self.last_error[role] = error
        if self.consecutive[role] >= self.limit:
            raise RoleFailed(
                f"role {role} (model {model!r}) failed {self.consecutive[role]} times in a row; "
                f"last error: {error}"
            )


@dataclass
class Counters:
    """Live numbers for the progress bar and the final summary."""

    turns: int = 0
    revisions: int = 0
    failures: int = 0
    calls: int = 0
    critic_unparsed: int = 0
    emotion_unparsed: int = 0
    emotion_disagrees: int = 0  # emotion_source=chosen: turns whose chosen label is not the gold one
    copy_retries: int = 0  # guided spans that repeated an earlier text and were written again


def _stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


def clean_turn(text: str) -> str:
    """A model's free text made into one plain turn: no span markup, no 'User:' prefix, no quotes."""

    text = strip_span_markup(text or "")
    text = re.sub(r"<\|[A-Za-z0-9_.:-]{1,64}\|>", "", text)
    for _ in range(2):
        text = _ROLE_PREFIX.sub("", text.strip())
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] in "\"'“" and text[-1] in "\"'”":
        text = text[1:-1].strip()
    return text


def history_text(turns: list[dict]) -> str:
    """The conversation as the roles read it; assistant turns show only their visible response."""

    if not turns:
        return "(nothing yet)"
    lines = []
    for m in turns:
        if m["role"] == "user":
            lines.append(f"Person: {m['content']}")
        elif m["role"] == "assistant":
            lines.append(f"Listener: {visible_response(m['content'])}")
    return "\n".join(lines)


class DialogueLoop:
    """Makes dialogues for one build config; shares role models and health across dialogues."""

    def __init__(self, cfg: BuildConfig, counters: Counters | None = None, health: RoleHealth | None = None):
        self.cfg = cfg
        self.counters = counters or Counters()
        self.health = health or RoleHealth(cfg.max_role_failures)
        m = cfg.models
        self.models = {"user": m.user, "responder": m.responder, "critic": m.critic}
        opts = cfg.llm_options
        self.user_llm = load_llm(m.user, cache=cfg.llm_cache, **opts.for_model(m.user))
        self.resp_llm = load_llm(m.responder, cache=cfg.llm_cache, **opts.for_model(m.responder))

        self.critic = Critic(model=m.critic, rubric=cfg.critic_rubric, scorer=cfg.critic_scorer, cache=cfg.llm_cache,
            llm_options=opts.for_model(m.critic),
        )
        mode = cfg.emotion_choice
        if cfg.emotion_source == "target":
            mode = "target"
        elif mode == "auto":
            mode = "probs" if self.resp_llm.token_probs else "text"
        if mode == "probs" and not self.resp_llm.token_probs:
            raise ValueError(f"emotion_choice=probs needs a local responder model, got {m.responder!r}")
        self.emotion_mode = mode

    # -- calls -----------------------------------------------------------------------------------
    def _params(self, max_tokens: int, stop: list[str], *seed_parts: Any) -> SamplingParams:
        s = self.cfg.sampling
        seed = _stable_seed(self.cfg.seed, *seed_parts) if (s.seed_calls and s.temperature > 0) else None
        return SamplingParams(max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed, stop=stop)

    async def _call(self, role: str, llm, messages: list[dict], params: SamplingParams) -> str:
        self.counters.calls += 1
        try:
            comp = (await llm.agenerate([messages], params))[0]
        except LLMError as exc:
            self.health.failed(role, self.models[role], str(exc))
            raise DialogueFailed(f"{role}: {exc}") from exc
        self.health.ok(role)
        return comp.text

    async def _text(
        self,
        role: str,
        llm,
        prompt: str,
        max_tokens: int,
        stop: list[str],
        *seed_parts: Any,
        whole_sentences: bool = False,
        avoid: tuple[str, ...] = (),
    ) -> str:
        """One free-text call, cleaned; an empty answer is retried once with another seed, then fails.

        A text that copies one of `avoid` (the filters' 4-gram test) is written once more, sampled: a
        small model's reasoning often repeats its understanding word for word, and dropping those
        dialogues afterwards cost a third of a CPU build. A second copy is kept; the filter drops it.
        """

        copied = ""
        for retry in range(2):
            # local backends: no stop strings (transformers rebuilds its stop-string tables on every
            # generate call, slower than a few extra tokens); the first line is kept below either way
            # a span with no complete sentence in its budget is retried with twice the budget
            budget = max_tokens * (2 if retry and whole_sentences and not copied else 1)
            params = self._params(budget, stop if self._remote(llm) else [], *seed_parts, retry)
            if retry and params.seed is None:  # greedy: a retry would repeat itself, so sample once
                params = params.model_copy(update={"temperature": 0.7, "seed": _stable_seed(self.cfg.seed, *seed_parts)})
            raw = await self._call(role, llm, [{"role": "user", "content": prompt}], params)
            if "\n" in stop:
                raw = next((ln for ln in raw.splitlines() if clean_turn(ln)), "")
            text = clean_turn(raw)
            if whole_sentences:
                text = cut_to_sentence(text)
            if text and any(copies_turn(text, a) for a in avoid if a):
                if retry:
                    return text
                copied = text
                self.counters.copy_retries += 1
                continue
            if text:
                return text
        if copied:
            return copied
        self.health.failed(role, self.models[role], "empty answer twice")
        raise DialogueFailed(f"{role}: empty answer twice ({'/'.join(map(str, seed_parts))})")

    def _profile(self, item: PlanItem) -> str:
        """The profile as the role prompts show it (clipped to `profile_words`: prompt tokens cost on a CPU)."""

        return clip_words(" ".join(item.profile.person.split()), self.cfg.profile_words)

    @staticmethod
    def _remote(llm) -> bool:
        return not llm.token_probs

    # -- roles -----------------------------------------------------------------------------------
    async def user_turn(self, item: PlanItem, turns: list[dict], k: int) -> str:
        p = self.cfg.prompts
        slots = dict(profile=self._profile(item), situation=item.seed.situation, emotion=item.emotion)
        prompt = fill(p.first_user, **slots) if not turns else fill(p.user, history=history_text(turns), **slots)
        return await self._text("user", self.user_llm, prompt, self.cfg.sampling.user_max_tokens, ["\n"], item.id, k, "U")

    async def responder_turn(self, item: PlanItem, turns: list[dict], k: int, attempt: int, revision: str) -> tuple[str, dict]:
        if self.cfg.responder_mode == "single":
            return await self._single(item, turns, k, attempt, revision)
        return await self._guided(item, turns, k, attempt, revision)

    async def _guided(self, item: PlanItem, turns: list[dict], k: int, attempt: int, revision: str) -> tuple[str, dict]:
        p, s = self.cfg.prompts, self.cfg.sampling
        base = dict(profile=self._profile(item), situation=item.seed.situation, history=history_text(turns), revision=revision)
        sid = (item.id, k, "A", attempt)
        target = self.cfg.emotion_source == "target"
        # target: the gold label is known before writing, so every span is written toward it
        base["emotion_hint"] = f"They feel {item.emotion}.\n" if target else ""
        user = turns[-1]["content"] if turns and turns[-1]["role"] == "user" else ""
        und = await self._span(fill(p.understanding, **base), s.span_max_tokens, *sid, "u", avoid=(user,))
        rea = await self._span(fill(p.reasoning, understanding=und, **base), s.span_max_tokens, *sid, "r", avoid=(und,))
        if target:
            emo, info = item.emotion, {"emotion_source": "target"}
        else:
            emo, info = await self._emotion(fill(p.emotion, understanding=und, reasoning=rea, labels=_labels_text(), **base), sid)
            info = {**info, "emotion_source": "chosen", "emotion_agrees": emo == item.emotion}
            self.counters.emotion_disagrees += int(emo != item.emotion)
        resp = await self._span(
            fill(p.response, understanding=und, reasoning=rea, emotion=emo, **base),
            s.response_max_tokens,
            *sid,
            "resp",
            avoid=(und + " " + rea, user),
        )
        return render(und, rea, emo, resp), info

    async def _span(self, prompt: str, max_tokens: int, *seed_parts: Any, avoid: tuple[str, ...] = ()) -> str:
        """One span: its first line, up to its last complete sentence (a token limit never cuts one)."""
        return await self._text(
            "responder", self.resp_llm, prompt, max_tokens, ["\n"], *seed_parts, whole_sentences=True, avoid=avoid
        )

    async def _emotion(self, prompt: str, sid: tuple) -> tuple[str, dict]:
        msgs = [{"role": "user", "content": prompt}]
        if self.emotion_mode == "probs":
            self.counters.calls += 1
            try:
                label, p = await most_probable_label(self.resp_llm, msgs)
            except LLMError as exc:
                self.health.failed("responder", self.models["responder"], str(exc))
                raise DialogueFailed(f"responder: {exc}") from exc
            self.health.ok("responder")
            return label, {"emotion_mode": "probs", "emotion_p": round(p, 4)}
        raw = ""
        for retry in range(2):
            raw = await self._call("responder", self.resp_llm, msgs, self._params(8, ["\n"], *sid, "e", retry))
            label = normalize(raw)
            if label:
                return label, {"emotion_mode": "text", "emotion_retries": retry}
            self.counters.emotion_unparsed += 1
        # not a label after a retry: kept as written (cleaned) and counted; the label filter drops it
        return clean_turn(raw) or "unknown", {"emotion_mode": "text", "emotion_unparsed": 2}

    async def _single(self, item: PlanItem, turns: list[dict], k: int, attempt: int, revision: str) -> tuple[str, dict]:
        sys = system_prompt(item.profile.person, item.seed.situation)
        if self.cfg.emotion_source == "target":
            sys += f"\nThe person's emotion is {item.emotion}: write the emotion span as exactly that label."
        if revision:
            sys = sys + "\n" + revision
        msgs = [{"role": "system", "content": sys}, *turns]
        params = self._params(self.cfg.sampling.single_max_tokens, [], item.id, k, "A", attempt)
        text = (await self._call("responder", self.resp_llm, msgs, params)).strip()
        parsed = parse(text)
        info = {"format_ok": parsed.ok, "format_problems": parsed.problems[:5], "emotion_source": self.cfg.emotion_source}
        if parsed.emotion is not None:
            info["emotion_agrees"] = parsed.emotion == item.emotion
            self.counters.emotion_disagrees += int(parsed.emotion != item.emotion)
        return text, info

    async def critique(self, item: PlanItem, turns: list[dict], draft: str):
        judge_item = JudgeItem(
            profile=item.profile.person, situation=item.seed.situation, history=list(turns), response=draft,
            emotion=item.emotion, id=item.id,
        )
        self.counters.calls += 1
        try:
            crit = await self.critic.acritique(judge_item)
        except LLMError as exc:
            crit = None
            error = str(exc)
        else:
            error = crit.error.removeprefix("llm:").strip() if crit.error_kind == "call" else None
        if error is not None:  # the critic's MODEL failed (not its answer): a role failure
            self.health.failed("critic", self.models["critic"], error)
            raise DialogueFailed(f"critic: {error}")
        self.health.ok("critic")
        return crit

    # -- the dialogue ----------------------------------------------------------------------------
    async def run(self, item: PlanItem, anon_user: str) -> dict:
        """Make one dialogue. Returns {"record": ..., "trace": [...]}; raises DialogueFailed."""
        from ..prompts import fill, system_prompt

        cfg = self.cfg
        turns: list[dict] = []
        trace: list[dict] = []
        verdicts = {v: 0 for v in VERDICTS}
        revisions = unparsed = emotion_unparsed = disagreements = 0
        ended = "max_exchanges"
        for k in range(cfg.max_exchanges):
            if k == 0 and cfg.first_user_turn == "situation":
                user = opening_from_situation(item.seed.situation)
            else:
                user = await self.user_turn(item, turns, k)
            if k > 0 and cfg.user_drift == "end" and _drifts(user, cfg.filters.identity_patterns):
                trace.append({"exchange": k, "role": "U", "kind": "user_drift_end", "text": user})
                ended = "user_drift"
                break
            turns.append({"role": "user", "content": user})
            self.counters.turns += 1
            trace.append({"exchange": k, "role": "U", "kind": "user_turn", "text": user})
            revision = ""
            final = None
            solved = False
            for attempt in range(cfg.max_revisions + 1):
                draft, info = await self.responder_turn(item, turns, k, attempt, revision)
                emotion_unparsed += int(info.get("emotion_unparsed", 0))
                disagreements += int(info.get("emotion_agrees") is False)
                trace.append({"exchange": k, "attempt": attempt, "role": "A", "kind": "draft", "text": draft, **info})
                crit = await self.critique(item, turns, draft)
                verdict = crit.verdict if crit.verdict in VERDICTS else None
                trace.append(
                    {
                        "exchange": k, "attempt": attempt, "role": "R", "kind": "critique", "verdict": verdict,
                        "reasons": dict(crit.reasons or {}), "raw": crit.raw, "error": crit.error,
                    }
                )
                if verdict is None:
                    unparsed += 1
                    self.counters.critic_unparsed += 1
                    effective = "FAIL" if cfg.critic_unparsed == "fail" else "PASS"
                else:
                    verdicts[verdict] += 1
                    effective = verdict
                final = draft
                if effective != "FAIL":
                    solved = effective == "SOLVED"
                    break
                if attempt < cfg.max_revisions:
                    revisions += 1
                    self.counters.revisions += 1
                    reasons = crit.reasons or {}
                    critique = "\n".join(f"- {k2}: {v}" for k2, v in reasons.items()) or (
                        f"- verdict {verdict}, no reasons given" if verdict else
                        f"- (the critic's answer could not be read: {crit.error or 'no verdict'})"
                    )
                    revision = fill(cfg.prompts.revise, previous=_visible_draft(draft), critique=critique)
            turns.append({"role": "assistant", "content": final})
            if solved:
                ended = "solved"
                break
        record = {
            "id": item.id,
            "person": item.profile.person,
            "mbti": item.profile.mbti,
            "emotion": item.emotion,
            "situation": item.seed.situation,
            "anon_username": anon_user,
            "messages": [{"role": "system", "content": system_prompt(item.profile.person, item.seed.situation)}, *turns],
            "meta": {
                "seed": cfg.seed,
                "models": dict(self.models),
                "verdict_counts": verdicts,
                "difficulty": None,
                "split": None,
                "mbti_assigned": item.profile.mbti_assigned,
                "source": item.seed.source,
                "profile_id": item.profile.id,
                "seed_id": item.seed.id,
                "exchanges": len(turns) // 2,
                "revisions": revisions,
                "critic_unparsed": unparsed,
                "critic_unparsed_policy": cfg.critic_unparsed,
                "emotion_unparsed": emotion_unparsed,
                "emotion_source": cfg.emotion_source,
                "emotion_disagreements": disagreements,  # drafts whose chosen label was not the gold one
                "responder_mode": cfg.responder_mode,
                "ended": ended,
            },
        }
        return {"record": record, "trace": trace}


def _labels_text() -> str:
    return ", ".join(LABELS)


def _visible_draft(draft: str) -> str:
    """The previous draft shown to the responder when revising (all spans, as plain lines)."""

    p = parse(draft)
    if not any(p.as_dict().values()):
        return draft.strip()[:600]
    return "\n".join(f"{k}: {v}" for k, v in p.as_dict().items() if v is not None)


def opening_from_situation(situation: str) -> str:
    """The seed situation as the user's first message (ED situations are lowercased: restore sentence case)."""
    text = " ".join(situation.split())
    return text[:1].upper() + text[1:] if text else text


def _drifts(text: str, patterns: str) -> bool:
    return any(p.search(text) for p in identity_patterns(patterns))
