"""Turns/s of `kardia eval` with the embedded model (spans mode) and the embedded judge: one turn at a
time versus turns in flight through the batched local backend, in one process on the same turns.

Rows, on the first N situations of EmpatheticDialogues' validation split
(`/work/shared/data/empatheticdialogues/ed_situations_valid.csv`, or `--data`):
- `concurrency=1`: today's one-turn-at-a-time path (answer, then judge, then the next turn);
- `concurrency=<default>` (EvalConfig's default): that many turns in flight; their answers, and
  their judge scoring passes, meet in the local backend's queue and run as batched forward passes.
Each row prints the batch sizes the backend formed. The untrained embedded model writes no response
span, so under eval's default `no_response=min` no turn would reach the judge; the benchmark judges
the fallback sentence the user saw (`--no-response fallback`, its default), as every turn of a
span-writing model is judged; `--no-response min` measures eval's default as is. No cache (the second row would otherwise read
the first row's answers); one untimed warm-up turn first. Target: the default >= 3x `concurrency=1`.

    flock /tmp/kardia-cpu.lock python benchmarks/eval_throughput.py               # 200 turns: long on 2 cores
    python benchmarks/eval_throughput.py --n 8 --max-tokens 48                   # a quick look
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path("/work/shared/data/empatheticdialogues/ed_situations_valid.csv")


def run(data: str, n: int, concurrency: int, max_tokens: int | None, no_response: str, out: Path) -> dict:
    """One `kardia eval` run; returns turns, seconds, judged turns and the batch sizes formed."""
    from kardia.eval.run import EvalConfig, read_results, run_eval
    from kardia.llm import load_llm

    fields = dict(model="embedded", judge="embedded", mode="spans", data=data, limit=n, out=str(out),
                  concurrency=concurrency, no_response=no_response, cache=False, report=False)
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    cfg = EvalConfig(**fields)
    llm = load_llm("embedded", cache=False)  # the instance eval's model and judge share
    before = len(llm.batch_sizes)
    t0 = time.perf_counter()
    summary = run_eval(cfg, progress=False)
    secs = time.perf_counter() - t0
    if summary["failures"]:
        raise SystemExit(f"eval at concurrency {concurrency} failed: {summary['failures'][:3]}")
    recs = read_results(out)
    judged = sum(1 for r in recs if (r.get("judge") or {}).get("scores") and not r["judge"].get("skipped"))
    return {"concurrency": concurrency, "turns": len(recs), "seconds": secs, "judged": judged,
            "batch_sizes": llm.batch_sizes[before:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="turns (the first N situations)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="ED situations CSV (or any eval data file)")
    ap.add_argument("--max-tokens", type=int, default=None, help="spans-mode answer length (default: EvalConfig's)")
    ap.add_argument("--no-response", default="fallback", choices=["fallback", "min", "exclude"],
                    help="spans-mode turns with no response span: judge the fallback (default here) or eval's own default (min)")
    ap.add_argument("--concurrency", type=int, default=None, help="the batched row's turns in flight (default: EvalConfig's)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not Path(args.data).exists():
        raise SystemExit(f"no data at {args.data}: pass --data (see /work/shared/data/README.md)")

    import torch

    from kardia.eval.run import EvalConfig

    default = args.concurrency or EvalConfig.model_fields["concurrency"].default
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run(args.data, 1, 1, args.max_tokens, args.no_response, Path(tmp) / "warm")  # loads the weights, warms generate and the judge
        for c in (1, default):
            r = run(args.data, args.n, c, args.max_tokens, args.no_response, Path(tmp) / f"c{c}")
            rows.append(r)
            print(f"  concurrency {c}: {r['turns']} turns in {r['seconds']:.1f}s, {r['judged']} judged, "
                  f"{len(r['batch_sizes'])} batches", flush=True)

    tokens = args.max_tokens or EvalConfig.model_fields["max_tokens"].default
    print()
    print(f"machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads, embedded model (SmolLM2-135M) in spans mode, max_tokens={tokens}, "
          f"embedded judge (no_response={args.no_response}), {args.n} turns of {Path(args.data).name}")
    print()
    print("| concurrency | turns | judged | seconds | turns/s | vs concurrency 1 | batches | mean / max batch size |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    base = rows[0]["turns"] / rows[0]["seconds"]
    for r in rows:
        tps = r["turns"] / r["seconds"]
        sizes = r["batch_sizes"] or [0]
        print(f"| {r['concurrency']} | {r['turns']} | {r['judged']} | {r['seconds']:.1f} | {tps:.3f} | {tps / base:.2f}x | "
              f"{len(r['batch_sizes'])} | {statistics.mean(sizes):.1f} / {max(sizes)} |")


if __name__ == "__main__":
    main()
