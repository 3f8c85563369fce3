"""The embedded judge's probability scorer: five dimension prompts per turn, scored separately vs on one
shared prefix (`LocalLLM.anext_token_probs_shared`: the system prompt and the quoted data block run once,
only each dimension's tail is computed). Same turns, same judge, one process; the scores must agree.

    python benchmarks/judge_probs_shared.py [--turns 32]
"""

from __future__ import annotations

import argparse
import asyncio
import time

REPLIES = [
    "That sounds really hard. I'm here with you; what feels heaviest right now?",
    "Congratulations! You worked so hard for this, you must be proud.",
    "I'm sorry that happened. Do you want to talk about it?",
    "Wow, that is a lot to carry. How are you holding up tonight?",
]


class _Separate:
    """The same local model without the shared-prefix path: the judge falls back to one prompt per dimension."""

    def __init__(self, inner):
        self.inner = inner

    async def anext_token_probs(self, *a, **k):
        return await self.inner.anext_token_probs(*a, **k)


def main() -> None:
    from kardia.eval.loaders import load_items
    from kardia.judge import Judge, JudgeItem

    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=32)
    a = ap.parse_args()
    items = []
    from kardia.paths import resource_path

    for i, it in enumerate(load_items(str(resource_path("samples", "eval_situations.csv")), "auto", a.turns)):
        items.append(JudgeItem(profile="MBTI: INFP. I work at a bakery and love hiking.", situation=it.situation,
                               history=it.history, response=REPLIES[i % len(REPLIES)]))
    judge = Judge(model="embedded", rubric="kardia", scorer="probs", cache=False)
    shared_llm = judge.llm
    asyncio.run(judge.ascore_many(items[:2]))  # warm-up
    rows = []
    for name, llm in (("separate (one prompt per dimension)", _Separate(shared_llm)), ("shared prefix", shared_llm)):
        judge._llm = llm
        t = time.perf_counter()
        res = asyncio.run(judge.ascore_many(items))
        rows.append((name, time.perf_counter() - t, res))
    base = rows[0][1]
    diff = max(abs(x.scores[k] - y.scores[k]) for x, y in zip(rows[0][2], rows[1][2]) for k in x.scores)
    print(f"\nEmbedded judge, probability scorer, {len(items)} turns x 5 dimensions\n")
    print("| path | seconds | s/turn | speedup |\n|---|---:|---:|---:|")
    for name, s, _ in rows:
        print(f"| {name} | {s:.1f} | {s / len(items):.2f} | {base / s:.2f}x |")
    print(f"\nlargest score difference between the paths: {diff:.4f} (1-5 scale)")


if __name__ == "__main__":
    main()
