"""The sampling plan: which profile meets which (situation, emotion), reproducibly.

`natural` draws situations uniformly, so the source's label imbalance is kept (as the paper keeps
ED's); `balanced` cycles through the labels present so each gets the same share. A dialogue id is a
hash of (profile id, seed id, slot): the same config always gives the same ids, which is what lets a
killed run skip finished work and shards be merged.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from .profiles import Profile, assign_mbti
from .seeds import Seed


@dataclass(frozen=True)
class PlanItem:
    id: str
    profile: Profile
    seed: Seed

    @property
    def emotion(self) -> str:
        return self.seed.emotion


def dialogue_id(profile_id: str, seed_id: str, slot: int) -> str:
    return "kb-" + hashlib.sha256(f"{profile_id}|{seed_id}|{slot}".encode("utf-8")).hexdigest()[:16]


def make_plan(
    profiles: Sequence[Profile],
    seeds: Sequence[Seed],
    per_profile: int,
    distribution: str = "natural",
    seed: int = 0,
    max_profiles: int | None = None,
    assign: bool = False,
) -> list[PlanItem]:
    if not profiles:
        raise ValueError("the plan has no profiles (check `profiles:` in the config)")
    if not seeds:
        raise ValueError("the plan has no situations (check `seeds:` in the config)")
    rng = random.Random(seed)
    chosen = list(profiles)
    if max_profiles is not None and max_profiles < len(chosen):
        chosen = rng.sample(chosen, max_profiles)
    if assign:
        chosen = [assign_mbti(p, seed) for p in chosen]
    by_label: dict[str, list[Seed]] = defaultdict(list)
    for s in seeds:
        by_label[s.emotion].append(s)
    labels = sorted(by_label)
    pools = {lab: rng.sample(v, len(v)) for lab, v in by_label.items()}  # shuffled, drawn without replacement
    natural_pool = rng.sample(list(seeds), len(seeds))
    label_cycle: list[str] = []
    items: list[PlanItem] = []
    used = 0
    for prof in chosen:
        for slot in range(per_profile):
            if distribution == "balanced":
                if not label_cycle:
                    label_cycle = rng.sample(labels, len(labels))
                lab = label_cycle.pop()
                pool = pools[lab]
                if not pool:  # every situation of this label used: reuse them in a new order
                    pool.extend(rng.sample(by_label[lab], len(by_label[lab])))
                s = pool.pop()
            elif distribution == "natural":
                if used >= len(natural_pool):
                    natural_pool.extend(rng.sample(list(seeds), len(seeds)))
                s = natural_pool[used]
                used += 1
            else:
                raise ValueError(f"unknown distribution {distribution!r} (natural or balanced)")
            items.append(PlanItem(id=dialogue_id(prof.id, s.id, slot), profile=prof, seed=s))
    return items


def shard(items: Iterable[PlanItem], index: int, count: int) -> list[PlanItem]:
    """Shard I of N by a stable hash of the id: independent of plan order, disjoint, complete."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= I < N")
    return [it for it in items if int(it.id[3:], 16) % count == index]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        a, b = text.split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def describe(items: Sequence[PlanItem]) -> dict:
    """What a dry run prints: counts and the label distribution."""
    return {
        "dialogues": len(items),
        "profiles": len({it.profile.id for it in items}),
        "situations": len({it.seed.id for it in items}),
        "labels": dict(Counter(it.emotion for it in items).most_common()),
        "mbti_assigned": sum(1 for p in {it.profile.id: it.profile for it in items}.values() if p.mbti_assigned),
    }
