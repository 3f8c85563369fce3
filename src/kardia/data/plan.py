"""The sampling plan: which profile meets which (situation, emotion), reproducibly.

`natural` draws situations uniformly, so the source's label imbalance is kept (as the paper keeps
ED's); `balanced` cycles through the labels present so each gets the same share. A dialogue id is a
hash of (profile id, seed id, slot): the same config always gives the same ids, which is what lets a
killed run skip finished work and shards be merged.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

from .profiles import Profile, assign_mbti
from .seeds import Seed, SeedTable


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
    """The whole plan as a list (small callers; a build streams it with `Plan`)."""
    return list(Plan(lambda: iter(profiles), seeds, per_profile, distribution, seed, max_profiles, assign,
                     n_profiles=len(profiles)))


class Plan:
    """The plan as a stream: every pass re-reads the profiles and yields the same items in the same order.

    Only the situations are held (their shuffled pools decide the plan), compactly (`SeedTable`); profiles
    come from `profiles()`,
    a fresh iterator per pass, so the plan's memory does not grow with the number of profiles (with
    `max_profiles`, only the chosen ones are held). The RNG draws are those of the list version: the
    profile sample draws positions (which depend only on the count), the pools are drawn up front.
    """

    def __init__(
        self,
        profiles: Callable[[], Iterable[Profile]],
        seeds: Sequence[Seed] | SeedTable,
        per_profile: int,
        distribution: str = "natural",
        seed: int = 0,
        max_profiles: int | None = None,
        assign: bool = False,
        n_profiles: int | None = None,
        shard_spec: tuple[int, int] | None = None,
    ):
        self.profiles, self.per_profile = profiles, per_profile
        self.seeds = seeds if isinstance(seeds, SeedTable) else SeedTable(seeds)
        self.distribution, self.seed, self.max_profiles, self.assign = distribution, seed, max_profiles, assign
        self.n_profiles = sum(1 for _ in profiles()) if n_profiles is None else n_profiles
        self.shard_spec = shard_spec
        if shard_spec and (shard_spec[1] < 1 or not 0 <= shard_spec[0] < shard_spec[1]):
            raise ValueError(f"shard {shard_spec[0]}/{shard_spec[1]}: need 0 <= I < N")
        if not self.n_profiles:
            raise ValueError("the plan has no profiles (check `profiles:` in the config)")
        if not self.seeds:
            raise ValueError("the plan has no situations (check `seeds:` in the config)")
        if distribution not in ("natural", "balanced"):
            raise ValueError(f"unknown distribution {distribution!r} (natural or balanced)")
        self._len: int | None = None

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self)
        return self._len

    def _chosen(self, rng: random.Random) -> Iterator[Profile]:
        if self.max_profiles is None or self.max_profiles >= self.n_profiles:
            chosen: Iterable[Profile] = self.profiles()
        else:  # the positions `rng.sample(profiles, k)` picks; only those profiles are kept
            picks = rng.sample(range(self.n_profiles), self.max_profiles)
            wanted = set(picks)
            held = {i: p for i, p in enumerate(self.profiles()) if i in wanted}
            chosen = [held[i] for i in picks]
        for p in chosen:
            yield assign_mbti(p, self.seed) if self.assign else p

    def __iter__(self) -> Iterator[PlanItem]:
        rng = random.Random(self.seed)
        seeds, distribution = self.seeds, self.distribution
        chosen = self._chosen(rng)
        if self.max_profiles is not None and self.max_profiles < self.n_profiles:
            chosen = iter(list(chosen))  # draw the sample before the pools, as the list version did
        # situations by position: the same draws as sampling the Seed lists themselves (sample picks positions)
        by_label: dict[str, array] = defaultdict(lambda: array("i"))
        for i in range(len(seeds)):
            by_label[seeds.emotion(i)].append(i)
        labels = sorted(by_label)
        pools = {lab: array("i", rng.sample(v, len(v))) for lab, v in by_label.items()}  # shuffled, drawn without replacement
        natural_pool = array("i", rng.sample(range(len(seeds)), len(seeds)))
        label_cycle: list[str] = []
        used = 0
        for prof in chosen:
            for slot in range(self.per_profile):
                if distribution == "balanced":
                    if not label_cycle:
                        label_cycle = rng.sample(labels, len(labels))
                    lab = label_cycle.pop()
                    pool = pools[lab]
                    if not pool:  # every situation of this label used: reuse them in a new order
                        pool.extend(rng.sample(by_label[lab], len(by_label[lab])))
                    s = seeds[pool.pop()]
                else:
                    if used >= len(natural_pool):
                        natural_pool.extend(rng.sample(range(len(seeds)), len(seeds)))
                    s = seeds[natural_pool[used]]
                    used += 1
                item = PlanItem(id=dialogue_id(prof.id, s.id, slot), profile=prof, seed=s)
                if not self.shard_spec or _in_shard(item.id, *self.shard_spec):
                    yield item


def _in_shard(item_id: str, index: int, count: int) -> bool:
    return int(item_id[3:], 16) % count == index


def shard(items: Iterable[PlanItem], index: int, count: int) -> list[PlanItem]:
    """Shard I of N by a stable hash of the id: independent of plan order, disjoint, complete."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= I < N")
    return [it for it in items if _in_shard(it.id, index, count)]


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
