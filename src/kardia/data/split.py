"""Train/test by profile (no profile in both) and easy/hard by the critic's verdict frequencies."""

from __future__ import annotations

import hashlib
from typing import Iterable


def difficulty(verdict_counts: dict[str, int]) -> str | None:
    """The paper's rule on pFAIL, pPASS, pSOLVED (frequencies over the critic's parsed verdicts):
    easy if pFAIL < pPASS + pSOLVED or pFAIL + pPASS < pSOLVED, else hard.
    (The second clause implies the first; it is kept to mirror the paper.) None without any verdict:
    a dialogue whose every critique was unparseable has no evidence either way (counted in the card)."""
    f, p, s = (int(verdict_counts.get(k, 0)) for k in ("FAIL", "PASS", "SOLVED"))
    total = f + p + s
    if total == 0:
        return None
    pf, pp, ps = f / total, p / total, s / total
    return "easy" if (pf < pp + ps or pf + pp < ps) else "hard"


def pick_test_profiles(profile_ids: Iterable[str], fraction: float, seed: int = 0) -> set[str]:
    """round(n * fraction) profiles (at least one when fraction > 0 and n >= 2), chosen by a seeded
    hash so the choice is stable and independent of generation order."""
    ids = sorted(set(profile_ids))
    n = len(ids)
    k = round(n * fraction)
    if fraction > 0 and n >= 2:
        k = max(k, 1)
    k = min(k, n - 1) if n >= 2 and fraction < 1 else min(k, n)
    ranked = sorted(ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    return set(ranked[:k])
