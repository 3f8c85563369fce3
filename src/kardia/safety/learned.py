"""The learned layer: a fine-tuned sentence encoder with a small head, the guard's default second layer.

Why: the patterns know only the phrasings they list (blind sets found them at recall 0.07-0.63); the
crises they miss are preparation, means, attempts told as acts, eating-disorder danger signs, coercive
control, command hallucinations, slang and other languages. A frozen MiniLM with a head reached only
0.31 on blind set v4 (it measures topic, so ordinary distress sits next to crisis text); fine-tuning the
encoder itself on a broad corpus written by several independent authors moves both apart.

Inputs: the embedding of the text as the pattern engine cleans it (slang spelled out, idioms and others'
quotes cut), from MiniLM with the shipped low-rank weight deltas merged in, plus 0/1 cue features
(`learned_markers.yaml`: negation, fiction, past and resolved events, games, jokes...). Head: one hidden
layer (ReLU) -> 5 classes (none + the 4 categories). Risk = 1 - P(none); the category is the likeliest of
the four. Adapters, head, threshold and the corpus digest live in `resources/safety/crisis_classifier.npz`,
made by `scripts/train_crisis_classifier.py` (the threshold is set there on ED training situations, never
on the blind set).

Conversation history: the newest message is scored alone, and joined with the last user turns; the
joined score flags only when the newest message itself shows some risk (`context_floor`), so a person
who disclosed earlier and now talks about something else is not answered with the script forever.

The gate (`learned_markers.yaml: gate`): weights that say `use_gate` flag only a message that names
something a crisis is made of (an act, a means, an injury...). The frozen encoder needed it; the
fine-tuned one is trained without it (it cost recall on indirect messages: plans, farewells, control).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from ..paths import resource_path
from .types import CATEGORIES, RiskAssessment
from .encoder import Encoder, load_encoder
from .patterns import load_patterns

HISTORY_USER_TURNS = 3


class Featurizer:
    """Text -> classifier input (embedding of the cleaned text, then the scaled marker features)."""

    def __init__(self, markers: str | Path | None = None, patterns: str | None = None, encoder=None):
        self.patterns = load_patterns(patterns)
        path = Path(markers) if markers else resource_path("safety", "learned_markers.yaml")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        self.scale = float(data["scale"])
        try:
            self.gate = re.compile(str(data["gate"]))
        except (KeyError, re.error) as exc:
            raise ValueError(f"{path}: field gate: {exc}") from None
        self.names: list[str] = []
        self.regexes: list[re.Pattern] = []
        for name, spec in (data.get("markers") or {}).items():
            if isinstance(spec, dict):
                ref = str(spec["from_patterns"])
                rx = self.patterns.suppressors.get(ref.split(".", 1)[1]) if ref.startswith("suppressors.") else getattr(self.patterns, ref, None)
                if not isinstance(rx, re.Pattern):
                    raise ValueError(f"{path}: marker {name}: no regex {ref!r} in the pattern file")
            else:
                try:
                    rx = re.compile(str(spec))
                except re.error as exc:
                    raise ValueError(f"{path}: marker {name}: bad regular expression: {exc}") from None
            self.names.append(name)
            self.regexes.append(rx)
        self.encoder = encoder if encoder is not None else load_encoder()

    def gate_open(self, text: str) -> bool:
        return bool(self.gate.search(self.patterns.normalise(text)))

    def markers(self, text: str) -> np.ndarray:
        t = self.patterns.normalise(text)
        return np.array([1.0 if rx.search(t) else 0.0 for rx in self.regexes], dtype=np.float32)

    def encoder_texts(self, texts: list[str]) -> list[str]:
        """What the encoder reads: the cleaned text (or the text, when cleaning leaves nothing)."""
        return [self.patterns.clean(t) or t for t in texts]

    def marker_features(self, texts: list[str]) -> np.ndarray:
        """The scaled 0/1 cue features, one row per text."""
        marks = np.stack([self.markers(t) for t in texts]) if texts else np.zeros((0, len(self.names)), np.float32)
        return self.scale * marks

    def __call__(self, texts: list[str]) -> np.ndarray:
        emb = self.encoder.encode(self.encoder_texts(texts))
        return np.concatenate([emb, self.marker_features(texts)], axis=1).astype(np.float32)


def encoder_deltas(z) -> dict[str, np.ndarray]:
    """The fine-tuned encoder's weight changes, rebuilt from the shipped low-rank factors (delta = s * B @ A)."""
    scale = float(z["lora_scaling"])
    names = [k[len("lora_A.") :] for k in z.files if k.startswith("lora_A.")]
    return {n: (scale * z[f"lora_B.{n}"].astype(np.float32) @ z[f"lora_A.{n}"].astype(np.float32)) for n in names}


@dataclass(frozen=True)
class Score:
    risk: float  # 1 - P(none)
    category: str  # the likeliest crisis category (named even when risk is low)


class LearnedCheck:
    def __init__(self, weights: str | Path | None = None):
        self.path = Path(weights) if weights else resource_path("safety", "crisis_classifier.npz")
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: classifier weights missing (python scripts/train_crisis_classifier.py)")
        z = np.load(self.path, allow_pickle=False)
        self.labels = [str(x) for x in z["labels"]]
        if self.labels[0] != "none" or set(self.labels[1:]) != set(CATEGORIES):
            raise ValueError(f"{self.path}: field labels: {self.labels} (expected none + {CATEGORIES})")
        self.W1, self.b1, self.W2, self.b2 = (z[k].astype(np.float32) for k in ("W1", "b1", "W2", "b2"))
        self.threshold = float(z["threshold"])
        self.level_high = float(z["level_high"])
        self.context_threshold = float(z["context_threshold"])
        self.context_floor = float(z["context_floor"])
        self.corpus_sha = str(z["corpus_sha"])
        missing = [k for k in ("use_gate", "lora_scaling") if k not in z.files]
        if missing:
            raise ValueError(f"{self.path}: fields {missing} missing (weights of the frozen-encoder layer): retrain with scripts/train_crisis_classifier.py")
        self.use_gate = bool(z["use_gate"])
        self.featurize = Featurizer(encoder=Encoder(encoder_deltas(z)))
        if [str(x) for x in z["markers"]] != self.featurize.names:
            raise ValueError(f"{self.path}: trained on markers {list(z['markers'])}, learned_markers.yaml has {self.featurize.names}: retrain")

    def gate_open(self, text: str) -> bool:
        """Whether the gate lets the layer flag this text (always, for weights trained to do without it)."""
        return not self.use_gate or self.featurize.gate_open(text)

    def probs_from_features(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ self.W1 + self.b1, 0.0)
        logits = h @ self.W2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def scores(self, texts: list[str]) -> list[Score]:
        p = self.probs_from_features(self.featurize(texts))
        return [Score(float(1.0 - row[0]), self.labels[1 + int(np.argmax(row[1:]))]) for row in p]

    def _verdict(self, s: Score, rule: str, why: str) -> RiskAssessment:
        level = "high" if s.risk >= self.level_high else "medium"
        return RiskAssessment(
            category=s.category,
            level=level,
            categories=[s.category],
            rules=[rule],
            evidence=[f"{rule}: {why} (risk {s.risk:.2f}, threshold {self.threshold:.2f})"],
            source="learned",
        )

    def assess(self, message: str, history: list[dict] | None = None) -> RiskAssessment:
        users = [str(m.get("content", "")) for m in (history or []) if isinstance(m, dict) and m.get("role") == "user"]
        users = users[-HISTORY_USER_TURNS:]
        texts = [message] + ([" ".join(users + [message])] if users else [])
        scores = self.scores(texts)
        own = scores[0]
        if own.risk >= self.threshold and self.gate_open(message):
            return self._verdict(own, "learned_message", f"the message reads as {own.category}")
        if users and own.risk >= self.context_floor and scores[1].risk >= self.context_threshold and self.gate_open(texts[1]):
            v = self._verdict(scores[1], "learned_context", f"with the last {len(users)} user turns it reads as {scores[1].category}")
            return v.model_copy(update={"source": "context"})
        return RiskAssessment(source="learned")


@lru_cache(maxsize=2)
def load_learned(weights: str | None = None) -> LearnedCheck:
    return LearnedCheck(weights)
