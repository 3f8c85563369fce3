"""The 32 EmpatheticDialogues emotion labels, a strict normaliser, and a grouping for near-miss analysis.

`normalize` turns a model's emotion text ("I feel a bit scared", "Terrifying!", "a feeling of annoyance")
into one label, or None. It never guesses: text naming two different labels, a negation, or any word it
does not know gives None, so the emotion reward and accuracy only count what was clearly said.
The label forms and the groups are data files under `resources/emotions/`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from types import MappingProxyType

import yaml

from .paths import resource_path
from .spans import strip_span_markup

LABELS: tuple[str, ...] = (
    "sad", "trusting", "terrified", "caring", "disappointed", "faithful", "joyful", "jealous",
    "disgusted", "surprised", "ashamed", "afraid", "impressed", "sentimental", "devastated", "excited",
    "anticipating", "annoyed", "anxious", "furious", "content", "lonely", "angry", "confident",
    "apprehensive", "guilty", "embarrassed", "grateful", "hopeful", "proud", "prepared", "nostalgic",
)  # fmt: skip
LABEL_BY_ID = MappingProxyType(dict(enumerate(LABELS)))
ID_BY_LABEL = MappingProxyType({label: i for i, label in enumerate(LABELS)})
VALENCES = ("positive", "negative", "ambiguous")

_NON_WORD = re.compile(r"[^\w]+|_+")
_MAX_INPUT = 2000  # an emotion span is a word or two; longer text is not a label


class EmotionDataError(ValueError):
    """A shipped emotion data file is inconsistent (named with the file and the entry)."""


def _tokens(text: str) -> tuple[str, ...]:
    text = unicodedata.normalize("NFKC", text).casefold().replace("'", "").replace("\u2019", "")
    return tuple(t for t in _NON_WORD.split(text) if t)


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[tuple[str, ...], str], frozenset[str], int]:
    """(form tokens -> label, filler words, longest form length), checked for ambiguity on load."""
    path = resource_path("emotions", "labels.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries = data.get("labels") or []
    if [e.get("label") for e in entries] != list(LABELS) or [e.get("id") for e in entries] != list(range(32)):
        raise EmotionDataError(f"{path}: labels must be the 32 ED labels in id order 0..31")
    fillers = frozenset(t for w in data.get("filler_words") or [] for t in _tokens(str(w)))
    forms: dict[tuple[str, ...], str] = {}
    for e in entries:
        label = e["label"]
        for form in [label, *(e.get("forms") or [])]:
            toks = _tokens(str(form))
            if not toks:
                raise EmotionDataError(f"{path}: label {label}: empty form {form!r}")
            if len(toks) == 1 and toks[0] in fillers:
                raise EmotionDataError(f"{path}: label {label}: form {form!r} is also a filler word")
            other = forms.get(toks)
            if other is not None and other != label:
                raise EmotionDataError(f"{path}: form {form!r} is listed under both {other} and {label}")
            forms[toks] = label
    return forms, fillers, max(len(k) for k in forms)


@lru_cache(maxsize=1)
def _groups() -> tuple[dict[str, str], dict[str, str]]:
    path = resource_path("emotions", "groups.yaml")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    result = []
    for section, allowed in (("valence", VALENCES), ("families", None)):
        mapping: dict[str, str] = {}
        for group, labels in (data.get(section) or {}).items():
            if allowed is not None and group not in allowed:
                raise EmotionDataError(f"{path}: {section}: unknown group {group!r} (allowed: {allowed})")
            for label in labels:
                if label not in ID_BY_LABEL:
                    raise EmotionDataError(f"{path}: {section}.{group}: {label!r} is not an ED label")
                if label in mapping:
                    raise EmotionDataError(f"{path}: {section}: {label} is in both {mapping[label]} and {group}")
                mapping[label] = group
        missing = [lab for lab in LABELS if lab not in mapping]
        if missing:
            raise EmotionDataError(f"{path}: {section}: labels without a group: {missing}")
        result.append(mapping)
    return result[0], result[1]


def normalize(text: object) -> str | None:
    """One ED label for `text`, or None when it names none, several, a negation, or anything unknown."""
    if not isinstance(text, str) or len(text) > _MAX_INPUT:
        return None
    forms, fillers, longest = _lexicon()
    toks = _tokens(strip_span_markup(text))
    found: set[str] = set()
    i = 0
    while i < len(toks):
        for n in range(min(longest, len(toks) - i), 0, -1):  # longest form first: "let down" before "down"
            label = forms.get(toks[i : i + n])
            if label is not None:
                found.add(label)
                i += n
                break
        else:
            if toks[i] not in fillers:
                return None  # an unknown word ("not", "because", "dog"): do not guess
            i += 1
    return found.pop() if len(found) == 1 else None


def _label(label: str) -> str:
    if label not in ID_BY_LABEL:
        raise ValueError(f"{label!r} is not one of the 32 ED emotion labels (normalize() it first)")
    return label


def valence(label: str) -> str:
    """`positive`, `negative` or `ambiguous` (only `surprised`)."""
    return _groups()[0][_label(label)]


def family(label: str) -> str:
    """The cluster a label belongs to (fear, anger, sadness, joy, affection, optimism, shame, ...)."""
    return _groups()[1][_label(label)]


def families() -> dict[str, tuple[str, ...]]:
    """Family name -> its labels (in id order)."""
    out: dict[str, list[str]] = {}
    for label in LABELS:
        out.setdefault(family(label), []).append(label)
    return {k: tuple(v) for k, v in out.items()}


def same_family(a: str | None, b: str | None) -> bool:
    """Whether two labels share a family (a near miss when they differ). None never matches."""
    if a is None or b is None:
        return False
    return family(a) == family(b)


async def label_logprobs(llm, messages: list[dict]) -> dict[str, float]:
    """Log-probability of every label's whole token sequence as the answer after "Emotion:" (local models)."""
    return (await llm.asequence_logprobs([messages], [" " + lab for lab in LABELS], assistant_prefix="Emotion:"))[0]


async def most_probable_label(llm, messages: list[dict], prior: dict[str, float] | None = None) -> tuple[str, float]:
    """(label, probability): the most probable of the 32 labels as the answer after "Emotion:".

    Every label is scored by its whole token sequence, so multi-token labels are not penalised or
    favoured by their first piece. `prior` (from `label_logprobs` on a content-free input) applies
    contextual calibration (Zhao et al., 2021): the label the situation raises most above what the
    prompt alone predicts, so a model's favourite label does not win every item. Needs a local model;
    build and eval share this one definition.
    """
    import math

    scores = {k.strip(): v for k, v in (await label_logprobs(llm, messages)).items()}
    if prior is not None:
        scores = {k: v - prior[k] for k, v in scores.items()}
    top = max(scores.values())
    z = sum(math.exp(v - top) for v in scores.values())
    best = max(scores, key=scores.get)
    return best, math.exp(scores[best] - top) / z


def chance_levels(gold: list[str]) -> dict[str, float]:
    """What guessing would score on THIS sample: uniform over 32 labels, and always the commonest gold label."""
    from collections import Counter

    n = len(gold)
    if not n:
        return {"uniform": 1 / len(LABELS), "majority": 0.0, "majority_label": None}
    label, count = Counter(gold).most_common(1)[0]
    return {"uniform": 1 / len(LABELS), "majority": count / n, "majority_label": label}
