"""Tokens/s of kardia's model backends on the embedded model (SmolLM2-135M), in one process.

Rows:
- baseline: plain `model.generate`, one prompt at a time (the same loaded weights);
- local backend at batch 1 / 8 / 32: that many concurrent callers (`asyncio.gather`), which the
  worker gathers into batched generate calls; each row prints the batch sizes it formed (a burst of N
  callers should form one batch of N), and next to it plain `model.generate` on the same prompts in
  batches of N (left-padded): the ceiling the backend's batching should reach;
- openai backend against a real `transformers serve` subprocess at concurrency 1 and 8.
Greedy decoding, the same prompts everywhere; tokens counted are the completion tokens returned.
The first generate call of a process is slow (warm-up), so every engine gets one untimed call first.

    flock /tmp/kardia-cpu.lock python benchmarks/llm_throughput.py            # ~3 min on 2 cores
    python benchmarks/llm_throughput.py --max-tokens 64 --requests 64 --batches 1,8,32,64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time

PROMPTS = [
    "I lost my job today and I feel terrible. What should I do?",
    "My dog died last week and the house feels so empty.",
    "I finally got into the university I dreamed of!",
    "My best friend forgot my birthday again.",
    "I have a job interview tomorrow and I can't sleep.",
    "My grandmother's old recipe book made me cry today.",
    "Someone scratched my new car in the parking lot.",
    "I'm moving to a new city alone next month.",
    "My sister is getting married and I'm so proud of her.",
    "I failed my driving test for the third time.",
    "A stranger paid for my coffee this morning.",
    "I think my partner is hiding something from me.",
]


def conversations(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} (#{i})"}] for i in range(n)]


def bench_plain_generate(model, tok, convs, max_tokens: int, batch: int = 1) -> tuple[int, float]:
    """Plain `model.generate` on the prompts, `batch` at a time (left-padded): the baseline, and what
    the backend's batching should match."""
    import torch

    eos = tok.eos_token_id
    tokens = 0
    t0 = time.perf_counter()
    for start in range(0, len(convs), batch):
        texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs[start:start + batch]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=tok.pad_token_id,
            )
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            tokens += row.index(eos) + 1 if eos in row else len(row)
    return tokens, time.perf_counter() - t0


async def _gather_rounds(llm, convs, params, concurrency: int):
    """`concurrency` callers in flight at a time until all conversations are answered."""
    sem = asyncio.Semaphore(concurrency)

    async def one(c):
        async with sem:
            return await llm.achat(c, params)

    return await asyncio.gather(*(one(c) for c in convs))


def bench_backend(llm, convs, params, concurrency: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    out = asyncio.run(_gather_rounds(llm, convs, params, concurrency))
    return sum(c.completion_tokens for c in out), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=8, help="requests per row (at least the batch size is used)")
    ap.add_argument("--batches", default="1,8,32", help="local backend batch sizes (concurrent callers)")
    ap.add_argument("--concurrency", default="1,8", help="openai backend concurrency against transformers serve")
    ap.add_argument("--dtype", default="float32", help="local backend dtype (float32 or bfloat16)")
    ap.add_argument("--skip-serve", action="store_true", help="skip the transformers serve rows")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from kardia.llm import SamplingParams
    from kardia.llm.embedded import embedded_model_dir
    from kardia.llm.local import LocalLLM

    path = str(embedded_model_dir())
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    batches = [int(b) for b in args.batches.split(",") if b]
    llm = LocalLLM(path, name="embedded", max_batch=max(batches), dtype=args.dtype)
    model, tok = llm.load()
    rows: list[tuple[str, int, int, float]] = []  # (engine, batch/concurrency, tokens, seconds)

    warm = conversations(1)
    bench_plain_generate(model, tok, warm, 4)
    llm.chat(warm[0], SamplingParams(max_tokens=4, temperature=0.0))

    n = args.requests
    tokens, secs = bench_plain_generate(model, tok, conversations(n), args.max_tokens)
    rows.append(("plain model.generate, one prompt at a time", 1, tokens, secs))
    print(f"  baseline: {tokens} tokens in {secs:.1f}s", flush=True)
    local: list[tuple[int, list[int], float, float]] = []  # (callers, batch sizes, tokens/s, plain batched tokens/s)
    for b in batches:
        convs = conversations(max(n, b))
        llm.batch_sizes.clear()
        tokens, secs = bench_backend(llm, convs, params, b)
        sizes = list(llm.batch_sizes)
        rows.append((f"local backend, {b} concurrent callers", b, tokens, secs))
        p_tokens, p_secs = bench_plain_generate(model, tok, convs, args.max_tokens, batch=b)
        rows.append((f"plain model.generate, batches of {b}", b, p_tokens, p_secs))
        local.append((b, sizes, tokens / secs, p_tokens / p_secs))
        print(f"  local b={b}: {tokens} tokens in {secs:.1f}s, batch sizes {sizes}; "
              f"plain generate in batches of {b}: {p_tokens} tokens in {p_secs:.1f}s", flush=True)
    llm.close()

    if not args.skip_serve:
        from kardia.llm.openai_backend import OpenAILLM
        from kardia.testing.transformers_serve import TransformersServe

        with TransformersServe(path) as srv:
            remote = OpenAILLM(path, [srv.base_url], timeout_s=600, max_retries=0)
            bench_backend(remote, warm, SamplingParams(max_tokens=4, temperature=0.0), 1)
            for c in [int(x) for x in args.concurrency.split(",") if x]:
                tokens, secs = bench_backend(remote, conversations(max(n, c)), params, c)
                rows.append((f"openai backend -> transformers serve, concurrency {c}", c, tokens, secs))
                print(f"  serve c={c}: {tokens} tokens in {secs:.1f}s", flush=True)

    base = rows[0][2] / rows[0][3]
    print()
    print(
        f"machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, model SmolLM2-135M ({args.dtype}), "
        f"greedy, max_tokens={args.max_tokens}"
    )
    print()
    print("| engine | batch / concurrency | completion tokens | seconds | tokens/s | vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, b, tokens, secs in rows:
        tps = tokens / secs
        print(f"| {name} | {b} | {tokens} | {secs:.1f} | {tps:.1f} | {tps / base:.2f}x |")
    if local:
        one = next((tps for b, _, tps, _ in local if b == 1), local[0][2])
        print()
        print("Local backend vs plain generate on the same prompts (targets: a burst of N forms one batch of N; "
              "within 10% of plain batched generate; 32 callers >= 10x one caller):")
        print()
        print("| callers N | batch sizes formed | tokens/s | vs 1 caller | plain generate, batches of N: tokens/s | backend / plain |")
        print("|---:|---|---:|---:|---:|---:|")
        for b, sizes, tps, plain in local:
            shown = sizes if len(sizes) <= 12 else sizes[:12] + ["..."]
            print(f"| {b} | {shown} | {tps:.1f} | {tps / one:.2f}x | {plain:.1f} | {tps / plain:.2f} |")


if __name__ == "__main__":
    main()
