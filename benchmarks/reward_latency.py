"""Rubric reward step time vs one judge call's latency (target <= 1.5x), next to a sequential loop.

64 completions are judged against the FAKE OpenAI-compatible server (real HTTP on 127.0.0.1,
SCRIPTED answers; in its own process, as a real judge server would be) with a fixed latency per call. Run: `python benchmarks/reward_latency.py`.
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


def _serve(latency: float, port_q, stop_ev) -> None:
    """The judge server in its own process, as a real judge server would be (no shared GIL)."""
    import fastapi

    import kardia.testing.fake_openai_server as fake

    if not hasattr(fake, "Request"):  # foundation bug workaround (FastAPI 422 on the string annotation)
        fake.Request = fastapi.Request
    server = fake.FakeOpenAIServer(responder=scripted_judge, latency_s=latency).start()
    port_q.put(server.model_string())
    stop_ev.wait()
    server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--latencies", type=float, nargs="+", default=[0.2, 1.0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import multiprocessing as mp

    from kardia.judge import Judge, JudgeItem
    from kardia.rewards import judge_item_for, make_rubric_reward
    from kardia.spans import render

    prompts = [[{"role": "user", "content": f"I feel alone since I moved ({i})."}] for i in range(args.n)]
    completions = [render("u", "r", "lonely", f"That sounds lonely ({i}); what do you miss most?") for i in range(args.n)]

    async def one_call(judge) -> float:
        await judge.ascore(JudgeItem(response="warm-up"))  # client set-up outside the timing
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = await judge.ascore(JudgeItem(response="one call"))
            assert res.ok, res.error
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2]

    async def reward_step(model: str, max_conc: int) -> float:
        reward = make_rubric_reward(model, cache=False, llm_options={"max_concurrency": max_conc})
        await reward(completions[:2], prompts=prompts[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = await reward(completions, prompts=prompts)
            times.append(time.perf_counter() - t)
            assert all(r is not None for r in out) and reward.failures == 0
        return sorted(times)[len(times) // 2]

    async def sequential(model: str) -> float:
        judge = Judge(model, cache=False)
        await judge.ascore(JudgeItem(response="warm-up"))
        t = time.perf_counter()
        for i, c in enumerate(completions):
            assert (await judge.ascore(judge_item_for(c, i, {"prompts": prompts}))).ok
        return time.perf_counter() - t

    ctx = mp.get_context("spawn")
    table = []
    for k, latency in enumerate(args.latencies):
        port_q, stop_ev = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=_serve, args=(latency, port_q, stop_ev), daemon=True)
        proc.start()
        model = port_q.get(timeout=60)

        async def run_all():
            rows = [("one judge call (baseline)", 1, await one_call(Judge(model, cache=False)))]
            rows.append((f"rubric reward step, max_concurrency={args.n}", args.n, await reward_step(model, args.n)))
            rows.append(("rubric reward step, max_concurrency=32 (backend default)", args.n, await reward_step(model, 32)))
            if k == 0:
                rows.append(("sequential loop (one call after another)", args.n, await sequential(model)))
            return rows

        try:
            rows = asyncio.run(run_all())
        finally:
            stop_ev.set()
            proc.join(timeout=10)
        base = rows[0][2]
        table += [(latency, name, n, secs, secs / base) for name, n, secs in rows]

    print(f"\n{args.n} completions; fake judge server in its own process; median of {args.repeats} runs\n")
    print("| server latency | what | completions | seconds | x one call |")
    print("|---|---|---|---|---|")
    for latency, name, n, secs, ratio in table:
        print(f"| {latency:.1f} s | {name} | {n} | {secs:.3f} | {ratio:.2f}x |")
    for latency in args.latencies:
        ratio = next(r for l, name, _, _, r in table if l == latency and name.startswith("rubric reward step, max_concurrency=" + str(args.n)))
        print(f"target at {latency:.1f} s latency: reward step <= 1.5x one call -> {'MET' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
