"""Rubric reward step time vs one judge call's latency (target <= 1.5x), next to a sequential loop.

64 completions are judged (default settings: every completion of the batch in flight at once) against
the FAKE OpenAI-compatible server (real HTTP on 127.0.0.1, SCRIPTED answers; in its own process, as a
real judge server would be) with a fixed latency per call. A second table gives the client's CPU per
request: the official `openai` client (the old path) vs kardia's lean httpx client, same request JSON.
Run: `python benchmarks/reward_latency.py`.
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

    async def reward_step(model: str, max_conc: int | None) -> float:
        options = {"max_concurrency": max_conc} if max_conc else {}  # None: the backend's default settings
        reward = make_rubric_reward(model, cache=False, llm_options=options)
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

    async def client_cpu(model: str) -> list[tuple[str, float]]:
        """Client-process CPU seconds per request, `args.n` requests in flight at once, median of repeats."""
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        from kardia.llm import SamplingParams
        from kardia.llm.model_string import parse_model_string
        from kardia.llm.openai_backend import OpenAILLM

        spec = parse_model_string(model)
        url = spec.base_urls[0]
        msgs = [[{"role": "user", "content": f"msg {i} " + "x" * 1500}] for i in range(args.n)]
        official = AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, http_client=DefaultAsyncHttpxClient())
        lean = OpenAILLM(spec.model, [url])
        p = SamplingParams(max_tokens=64, temperature=0.0)

        async def official_batch():
            await asyncio.gather(*(official.chat.completions.create(model=spec.model, messages=m, max_tokens=64, temperature=0.0, top_p=1.0) for m in msgs))

        async def lean_batch():
            await lean.agenerate(msgs, p)

        rows = []
        for name, fn in (("official openai client (old path)", official_batch), ("lean httpx client (kardia)", lean_batch)):
            await fn()  # warm-up: connections opened outside the timing
            cpu = []
            for _ in range(args.repeats):
                t = time.process_time()
                await fn()
                cpu.append((time.process_time() - t) / args.n)
            rows.append((name, sorted(cpu)[len(cpu) // 2]))
        await official.close()
        await lean.aclose()
        return rows

    ctx = mp.get_context("spawn")
    cpu_rows: list = []
    table = []
    for k, latency in enumerate(args.latencies):
        port_q, stop_ev = ctx.Queue(), ctx.Event()
        proc = ctx.Process(target=_serve, args=(latency, port_q, stop_ev), daemon=True)
        proc.start()
        model = port_q.get(timeout=60)

        async def run_all():
            rows = [("one judge call (baseline)", 1, await one_call(Judge(model, cache=False)))]
            rows.append(("rubric reward step, default settings", args.n, await reward_step(model, None)))
            rows.append(("rubric reward step, max_concurrency=32 (a set limit)", args.n, await reward_step(model, 32)))
            if k == 0:
                rows.append(("sequential loop (one call after another)", args.n, await sequential(model)))
                cpu_rows.extend(await client_cpu(model))
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
    print(f"\nclient CPU per request ({args.n} in flight, {args.latencies[0]:.1f} s server latency, client process only)\n")
    print("| client | CPU ms per request |")
    print("|---|---|")
    for name, cpu in cpu_rows:
        print(f"| {name} | {cpu * 1000:.2f} |")
    print()
    for latency in args.latencies:
        ratio = next(r for l, name, _, _, r in table if l == latency and name == "rubric reward step, default settings")
        print(f"target at {latency:.1f} s latency: reward step <= 1.5x one call -> {'MET' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x)")


if __name__ == "__main__":
    main()
