"""Quality filters after generation. Each returns the reasons a dialogue is dropped (empty: keep).

How each is decided:
- structure: the record validates as a `DialogueRecord` (system prompt, then user/assistant turns
  alternating), has at least one exchange, ends with an assistant turn, no user turn is empty or
  contains span markup, and every assistant turn parses with `kardia.spans.parse` (`ok`).
- emotion outside the label set: the record's gold emotion and every assistant emotion span must be
  exactly one of the 32 labels.
- identity drift: a USER turn that speaks as an assistant or as a model (regular expressions in the
  data file `prompts/build/identity_drift_patterns.txt`), or that names an MBTI type other than the
  profile's own (the simulated user became someone else).
- abrupt emotion jumps: the assistant's emotion labels, turn by turn, mapped to valence
  (`kardia.emotions.valence`; `surprised` is ambiguous and skipped); more than `max_valence_flips`
  switches between positive and negative in consecutive labelled turns drops the dialogue.
- emotion = gold label: with `emotion_matches_gold`, every assistant emotion span must be the
  dialogue's gold label (what the emotion reward and the evaluation compare with).
- sentences cut short: an understanding, reasoning or response span that does not end a sentence
  (a token limit cut it) drops the dialogue.
- copied understanding: an understanding span that repeats the user's turn verbatim (half or more of its
  word 4-grams appear in that turn) teaches nothing about understanding.
- crisis mishandling: a user turn `assess`ed at risk (`kardia.safety`) must be met by an assistant
  response for which `handles_crisis` is true.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from .profiles import MBTI_TYPES
from ..prompts import template_path
from ..spans import parse, strip_span_markup, visible_response
from ..dataset import DialogueRecord
from ..emotions import LABELS
from .. import safety

_MBTI_IN_TEXT = re.compile(r"\b(" + "|".join(MBTI_TYPES) + r")\b")


@lru_cache(maxsize=8)
def identity_patterns(name_or_path: str) -> tuple[re.Pattern, ...]:
    out = []
    for line in template_path(name_or_path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(re.compile(line, re.I | re.M))
    return tuple(out)


def check_structure(rec: dict) -> list[str]:


    try:
        DialogueRecord.model_validate(rec)
    except Exception as exc:  # pydantic ValidationError: the first problem is enough to say why
        return [f"structure: not a valid record ({str(exc).splitlines()[1:3]})"]
    msgs = rec["messages"][1:]
    if len(msgs) < 2:
        return ["structure: no complete exchange"]
    if msgs[-1]["role"] != "assistant":
        return ["structure: ends with a user turn"]
    reasons = []
    for i, m in enumerate(msgs, start=1):
        if m["role"] == "user":
            if not m["content"].strip():
                reasons.append(f"structure: user turn {i} is empty")
            elif strip_span_markup(m["content"]) != m["content"]:
                reasons.append(f"structure: user turn {i} contains span markup")
        else:
            p = parse(m["content"])
            if not p.ok:
                reasons.append(f"structure: assistant turn {i}: {'; '.join(p.problems[:2]) or 'not four spans'}")
    return reasons


def check_emotion_labels(rec: dict) -> list[str]:
    from ..spans import parse

    reasons = []
    if rec.get("emotion") not in LABELS:
        reasons.append(f"emotion: gold label {rec.get('emotion')!r} is not one of the 32")
    for i, m in enumerate(rec["messages"]):
        if m["role"] == "assistant":
            emo = parse(m["content"]).emotion
            if emo is not None and emo not in LABELS:
                reasons.append(f"emotion: assistant turn {i} says {emo[:40]!r}, not one of the 32 labels")
    return reasons


def check_identity_drift(rec: dict, patterns: str = "build/identity_drift_patterns") -> list[str]:
    pats = identity_patterns(patterns)
    own = (rec.get("mbti") or "").upper()
    reasons = []
    for i, m in enumerate(rec["messages"]):
        if m["role"] != "user":
            continue
        for pat in pats:
            hit = pat.search(m["content"])
            if hit:
                reasons.append(f"identity drift: user turn {i} speaks as an assistant ({hit.group(0)!r})")
                break
        for t in set(_MBTI_IN_TEXT.findall(m["content"])):
            if t != own:
                reasons.append(f"identity drift: user turn {i} claims MBTI {t}, profile says {own or 'none'}")
    return reasons


def assistant_labels(rec: dict) -> list[str | None]:
    from ..spans import parse

    return [parse(m["content"]).emotion for m in rec["messages"] if m["role"] == "assistant"]


def check_emotion_jumps(rec: dict, max_flips: int = 1) -> list[str]:
    from ..emotions import LABELS, valence

    vals = [valence(lab) for lab in assistant_labels(rec) if lab in LABELS]
    vals = [v for v in vals if v != "ambiguous"]
    flips = sum(1 for a, b in zip(vals, vals[1:]) if a != b)
    if flips > max_flips:
        return [f"emotion jumps: valence switched {flips} times (> {max_flips})"]
    return []


def check_gold_emotion(rec: dict) -> list[str]:
    gold = rec.get("emotion")
    return [f"emotion: assistant turn {i} says {lab!r}, gold label is {gold!r}"
            for i, lab in enumerate(assistant_labels(rec), start=1) if lab is not None and lab != gold]


_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")


def ends_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text.strip()))


def cut_to_sentence(text: str) -> str:
    """Text up to its last complete sentence ('' when none is complete): a span is never cut mid-sentence."""
    text = text.strip()
    if ends_sentence(text):
        return text
    ends = [m.end() for m in re.finditer(r"[.!?…][\"'”’)\]]*(?=\s)", text)]
    return text[: ends[-1]].strip() if ends else ""


def check_complete_sentences(rec: dict) -> list[str]:
    from ..spans import parse

    reasons = []
    for i, m in enumerate((m for m in rec["messages"] if m["role"] == "assistant"), start=1):
        p = parse(m["content"])
        for name in ("understanding", "reasoning", "response"):
            value = getattr(p, name)
            if value and not ends_sentence(value):
                reasons.append(f"cut short: assistant turn {i} {name} ends mid-sentence ({value[-30:]!r})")
    return reasons


def _grams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.casefold())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies_turn(understanding: str, user_turn: str) -> bool:
    own = _grams(understanding)
    return bool(own) and len(own & _grams(user_turn)) / len(own) >= 0.5


def check_copied_understanding(rec: dict) -> list[str]:
    """Spans that repeat what came before them (the user's turn, or an earlier span) say nothing new."""
    from ..spans import parse

    reasons = []
    msgs = rec["messages"]
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and i > 0 and msgs[i - 1]["role"] == "user":
            p = parse(m["content"])
            und, rea, resp = p.understanding or "", p.reasoning or "", p.response or ""
            if copies_turn(und, msgs[i - 1]["content"]):
                reasons.append(f"copied: assistant turn {i} understanding repeats the user's turn")
            if copies_turn(rea, und):
                reasons.append(f"copied: assistant turn {i} reasoning repeats the understanding")
            if copies_turn(resp, und + " " + rea):
                reasons.append(f"copied: assistant turn {i} response repeats the understanding or reasoning")
            if copies_turn(resp, msgs[i - 1]["content"]):
                reasons.append(f"copied: assistant turn {i} response repeats the user's turn")
    return reasons


def check_crisis(rec: dict) -> list[str]:
    msgs = rec["messages"]
    reasons = []
    for i, m in enumerate(msgs):
        if m["role"] != "user" or i + 1 >= len(msgs):
            continue
        history = [dict(x) for x in msgs[1:i]]
        assessment = safety.assess(m["content"], history)
        if assessment.at_risk and not safety.handles_crisis(visible_response(msgs[i + 1]["content"]), assessment):
            reasons.append(f"crisis: user turn {i} at risk ({assessment.category}, {assessment.level}) not handled")
    return reasons


def apply_filters(rec: dict, cfg: Any) -> list[str]:
    """All enabled filters; structure first (the others assume a well-formed record)."""
    f = cfg.filters
    reasons: list[str] = []
    if f.structure:
        reasons += check_structure(rec)
        if reasons:
            return reasons
    if f.emotion_labels:
        reasons += check_emotion_labels(rec)
    if f.emotion_matches_gold:
        reasons += check_gold_emotion(rec)
    if f.complete_sentences:
        reasons += check_complete_sentences(rec)
    if f.copied_understanding:
        reasons += check_copied_understanding(rec)
    if f.identity_drift:
        reasons += check_identity_drift(rec, f.identity_patterns)
    if f.emotion_jumps:
        reasons += check_emotion_jumps(rec, f.max_valence_flips)
    if f.crisis:
        reasons += check_crisis(rec)
    return reasons
