"""Build memory: the compact near-duplicate index decides exactly as datasketch's MinHashLSH did."""

from __future__ import annotations

import random


def _reference(texts: list[tuple[str, str]], threshold: float = 0.8, num_perm: int = 128) -> list[str | None]:
    """The index as it was (commit cf99372): one MinHash object per kept dialogue in a MinHashLSH."""
    from datasketch import MinHash, MinHashLSH

    from kardia.data.dedup import _shingles

    lsh, sigs, order, out = MinHashLSH(threshold=threshold, num_perm=num_perm), {}, {}, []
    for key, text in texts:
        mh = MinHash(num_perm=num_perm)
        mh.update_batch(list(_shingles(text)))
        twins = [(mh.jaccard(sigs[o]), o) for o in lsh.query(mh)]
        twins = [t for t in twins if t[0] >= threshold]
        if twins:
            out.append(min(twins, key=lambda t: (-t[0], order[t[1]]))[1])
            continue
        lsh.insert(key, mh)
        sigs[key], order[key] = mh, len(order)
        out.append(None)
    return out


def test_compact_minhash_index_makes_the_same_decisions():
    from kardia.data.dedup import NearDupIndex

    rng = random.Random(5)
    words = [f"w{i}" for i in range(60)]
    bases = [[rng.choice(words) for _ in range(40)] for _ in range(30)]
    texts = []
    for i in range(600):  # near-copies of a few bases: many twins, some several at once
        w = list(rng.choice(bases))
        for _ in range(rng.randrange(0, 5)):
            w[rng.randrange(len(w))] = rng.choice(words)
        texts.append((f"k{i:04d}", " ".join(w)))
    texts.append(("short", "hi"))
    texts.append(("empty", ""))
    expected = _reference(texts)
    idx = NearDupIndex("minhash")
    got = [idx.check_and_add(k, t) for k, t in texts]
    assert got == expected
    assert sum(x is None for x in got) > 30 and sum(x is not None for x in got) > 100
    for thr in (0.5, 0.9):
        idx = NearDupIndex("minhash", threshold=thr)
        assert [idx.check_and_add(k, t) for k, t in texts[:200]] == _reference(texts[:200], threshold=thr)
