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


def _reference_plan(profiles, seeds, per_profile, distribution="natural", seed=0, max_profiles=None, assign=False):
    """make_plan as it was (commit cf99372): every profile and plan item in a list."""
    from collections import defaultdict

    from kardia.data.plan import PlanItem, dialogue_id
    from kardia.data.profiles import assign_mbti

    rng = random.Random(seed)
    chosen = list(profiles)
    if max_profiles is not None and max_profiles < len(chosen):
        chosen = rng.sample(chosen, max_profiles)
    if assign:
        chosen = [assign_mbti(p, seed) for p in chosen]
    by_label = defaultdict(list)
    for s in seeds:
        by_label[s.emotion].append(s)
    labels = sorted(by_label)
    pools = {lab: rng.sample(v, len(v)) for lab, v in by_label.items()}
    natural_pool = rng.sample(list(seeds), len(seeds))
    label_cycle, items, used = [], [], 0
    for prof in chosen:
        for slot in range(per_profile):
            if distribution == "balanced":
                if not label_cycle:
                    label_cycle = rng.sample(labels, len(labels))
                lab = label_cycle.pop()
                pool = pools[lab]
                if not pool:
                    pool.extend(rng.sample(by_label[lab], len(by_label[lab])))
                s = pool.pop()
            else:
                if used >= len(natural_pool):
                    natural_pool.extend(rng.sample(list(seeds), len(seeds)))
                s = natural_pool[used]
                used += 1
            items.append(PlanItem(id=dialogue_id(prof.id, s.id, slot), profile=prof, seed=s))
    return items


def test_streamed_plan_is_the_list_plan_item_for_item():
    from kardia.data.plan import Plan, shard
    from kardia.data.profiles import Profile
    from kardia.data.seeds import Seed

    profiles = [Profile(id=f"p{i}", person=f"About: person {i}", mbti="INFP" if i % 3 else "") for i in range(40)]
    seeds = [Seed(id=f"s{i}", situation=f"sit {i}", emotion=["sad", "proud", "afraid"][i % 7 % 3], source="t") for i in range(25)]
    reads = []

    def stream():
        reads.append(1)
        return iter(profiles)

    for dist in ("natural", "balanced"):
        for max_p in (None, 7, 40, 100):
            for assign in (False, True):
                args = (seeds, 3, dist, 5, max_p, assign)
                expected = _reference_plan(profiles, *args)
                plan = Plan(stream, *args)
                assert list(plan) == expected and list(plan) == expected and len(plan) == len(expected)
                sharded = Plan(stream, *args, n_profiles=len(profiles), shard_spec=(1, 3))
                assert list(sharded) == shard(expected, 1, 3)
    assert len(reads) > 10  # the profiles were re-read each pass, not held


def test_seed_table_gives_back_equal_seeds():
    from kardia.data.seeds import Seed, SeedTable

    seeds = [Seed(id=f"s{i}é", situation="" if i == 2 else f"caf\u00e9 \u2603 {i}", emotion=["sad", "proud"][i % 2],
                  source=f"src{i % 3}") for i in range(5)]
    table = SeedTable(seeds)
    assert len(table) == 5 and [table[i] for i in range(5)] == seeds and table.emotion(3) == "proud"
