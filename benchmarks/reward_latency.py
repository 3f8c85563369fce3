"""Rubric reward step time vs one judge call's latency (target <= 1.5x), next to a sequential loop.

64 completions are judged against the FAKE OpenAI-compatible server (real HTTP on 127.0.0.1,
SCRIPTED answers) with a fixed latency per call. Run: `python benchmarks/reward_latency.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time


def scripted_judge(messages, body) -> str:
    """SCRIPTED judge (not a model): 4 on every dimension asked for."""
    return json.dumps({k: 4 for k in re.findall(r"\(key: (\w+)\)", messages[-1]["content"])})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()

    import fastapi

    import kardia.testing.fake_openai_server as fake

    if not hasattr(fake, "Request"):  # foundation bug workaround (FastAPI 422 on the string annotation)
        fake.Request = fastapi.Request
    from kardia.judge import Judge
    from kardia.rewards import make_rubric_reward
    from kardia.spans import render

    server = fake.FakeOpenAIServer(responder=scripted_judge, latency_s=args.latency).start()
    try:
        prompts = [[{"role": "user", "content": f"I feel alone since I moved ({i})."}] for i in range(args.n)]
        completions = [render("u", "r", "lonely", f"That sounds lonely ({i}); what do you miss most?") for i in range(args.n)]
        rows = []

        async def one_call(judge) -> float:
            from kardia.judge import JudgeItem

            await judge.ascore(JudgeItem(response="warm-up"))  # client set-up outside the timing
            t = time.perf_counter()
            res = await judge.ascore(JudgeItem(response="one call"))
            assert res.ok, res.error
            return time.perf_counter() - t

        async def reward_step(max_conc: int) -> float:
            reward = make_rubric_reward(server.model_string(), cache=False, llm_options={"max_concurrency": max_conc})
            await one_call(reward.judge)
            t = time.perf_counter()
            out = await reward(completions, prompts=prompts)
            assert all(r is not None for r in out) and reward.failures == 0
            return time.perf_counter() - t

        async def sequential() -> float:
            from kardia.rewards import judge_item_for

            judge = Judge(server.model_string(), cache=False)
            await one_call(judge)
            t = time.perf_counter()
            for i, c in enumerate(completions):
                res = await judge.ascore(judge_item_for(c, i, {"prompts": prompts}))
                assert res.ok
            return time.perf_counter() - t

        latency = asyncio.run(one_call(Judge(server.model_string(), cache=False)))
        rows.append(("one judge call (baseline)", 1, latency))
        rows.append((f"rubric reward step, max_concurrency={args.n}", args.n, asyncio.run(reward_step(args.n))))
        rows.append(("rubric reward step, max_concurrency=32 (backend default)", args.n, asyncio.run(reward_step(32))))
        rows.append(("sequential loop (one call after another)", args.n, asyncio.run(sequential())))
    finally:
        server.stop()

    print(f"\nfake judge server latency per call: {args.latency:.3f} s; completions: {args.n}\n")
    print("| what | completions | seconds | x one call |")
    print("|---|---|---|---|")
    for name, n, secs in rows:
        print(f"| {name} | {n} | {secs:.3f} | {secs / latency:.2f}x |")
    ratio = rows[1][2] / latency
    print(f"\ntarget: reward step <= 1.5x one call -> {'MET' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
