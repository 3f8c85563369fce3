"""How much of a model server's capacity `kardia build` uses, versus a sequential loop.

Against the FAKE OpenAI-compatible server (real HTTP, the official openai client) with a fixed latency
per request and a fixed number of concurrent slots, run the real build engine (`generate`: user
simulator, guided four-span responder, critic) at concurrency 1, 8 and 32, and print dialogues per
minute and the fraction of server capacity used:
    used = (sum over requests of time holding a slot) / (slots x wall time).
A sequential loop (concurrency 1, how one-off research scripts generate) can use at most 1/slots.
Target: >= 90% at concurrency 32 with 32 slots.

    python benchmarks/build_throughput.py [--latency 0.5] [--capacity 32] [--exchanges 2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path


def run(concurrency: int, dialogues: int, latency: float, capacity: int, exchanges: int) -> dict:
    from kardia.data.config import BuildConfig
    from kardia.data.engine import generate, plan_for
    from kardia.testing.fake_roles import scripted_responder
    from kardia.testing.fake_openai_server import FakeOpenAIServer

    srv = FakeOpenAIServer(responder=scripted_responder(fail_rate=0.0, solved_rate=0.0), latency_s=latency, capacity=capacity).start()
    try:
        m = srv.model_string()
        per_profile = max(1, dialogues // 8)
        cfg = BuildConfig.model_validate(
            {
                "profiles": [{"kind": "person", "path": "kardia:samples/profiles.jsonl"}],
                "seeds": [{"kind": "jsonl", "path": "kardia:samples/situations.jsonl"}],
                "dialogues_per_profile": per_profile,
                "max_profiles": min(8, dialogues),
                "models": {"user": m, "responder": m, "critic": m},
                "max_exchanges": exchanges,
                "max_revisions": 0,
                "llm_cache": False,
                "concurrency": concurrency,
                "llm_options": {"max_concurrency": 256},
            }
        )
        items, _ = plan_for(cfg)
        items = items[:dialogues]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            gen = asyncio.run(generate(cfg, items, Path(tmp) / "generated.jsonl", "bench-salt", progress=False))
            wall = time.monotonic() - t0
        used = srv.stats.busy_seconds / (capacity * wall)
        return {
            "concurrency": concurrency,
            "dialogues": gen["written"],
            "requests": srv.stats.completed,
            "wall_s": wall,
            "dialogues_per_min": gen["written"] / wall * 60,
            "capacity_used": used,
            "max_in_flight": srv.stats.max_in_flight,
        }
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.5, help="seconds per request (fixed)")
    ap.add_argument("--capacity", type=int, default=32, help="concurrent requests the server serves")
    ap.add_argument("--exchanges", type=int, default=2)
    args = ap.parse_args()
    import httpx  # noqa: F401  (the openai backend's client: imported once here, not inside the first timed run)
    # dialogues per setting: enough for full waves at each concurrency, few enough to stay short
    plan = [(1, 2), (8, 16), (32, 64)]
    rows = [run(c, n, args.latency, args.capacity, args.exchanges) for c, n in plan]
    base = rows[0]["dialogues_per_min"]
    print(
        f"\nkardia build throughput vs the FAKE server: latency {args.latency}s/request, capacity {args.capacity} slots, "
        f"{args.exchanges} exchanges/dialogue, 6 requests/exchange (U + 4 guided responder calls + critic)\n"
    )
    print("| concurrency | dialogues | requests | wall s | dialogues/min | x vs sequential | capacity used | max in flight |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['dialogues']} | {r['requests']} | {r['wall_s']:.1f} | {r['dialogues_per_min']:.1f} | "
            f"{r['dialogues_per_min'] / base:.1f} | {r['capacity_used']:.1%} | {r['max_in_flight']} |"
        )
    print(f"\nsequential ceiling: 1/{args.capacity} = {1 / args.capacity:.1%}; target at concurrency 32: >= 90%")


if __name__ == "__main__":
    main()
