"""Which float type this machine computes fastest in, measured once per process, never assumed.

On a CPU with native bf16 (AVX512-BF16, AMX) bfloat16 matmuls run ~3x faster than float32: measured
on this project's 2-core EPYC, prefill 530 -> 1,765 tokens/s, a training step (8 x 200 tokens)
~150 -> ~440 tokens/s. On a CPU without it (AVX2 only) bf16 is 2-5x SLOWER, because every product
converts. The same code runs on both, so the choice is a micro-benchmark: a matmul of the embedded
model's shape in both types, bf16 chosen when it is at least 1.5x faster.
`KARDIA_CPU_BF16=1|0` forces the choice (e.g. for an exact float32 comparison).
"""

from __future__ import annotations

import functools
import os
import time

_FORCE = "KARDIA_CPU_BF16"


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """float32 time / bfloat16 time for a (256 x 576) @ (576 x 1536) matmul, best of 5 runs each."""
    import torch

    a, b = torch.randn(256, 576), torch.randn(576, 1536)

    def best(x, y) -> float:
        x @ y  # warm-up (kernel selection)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(4):
                x @ y
            times.append(time.perf_counter() - t)
        return min(times)

    try:
        return best(a, b) / best(a.bfloat16(), b.bfloat16())
    except RuntimeError:  # no bf16 kernels at all
        return 0.0


def cpu_prefers_bf16() -> bool:
    forced = os.environ.get(_FORCE, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{_FORCE}={forced!r}: use 1 (bfloat16) or 0 (float32)")
    return cpu_bf16_speedup() >= 1.5


def inference_dtype(dtype: str = "auto") -> tuple[str, bool]:
    """(dtype to load the weights in, whether to run under bf16 autocast) for inference.

    "auto" on a CPU keeps float32 weights and runs the matmuls in bf16 under autocast where that is
    fast: norms, softmax and the residual stream stay float32, so greedy outputs match float32 ones
    (pure bf16 weights changed even first tokens of the embedded model; autocast did not).
    """
    if dtype != "auto":
        return dtype, False
    import torch

    if torch.cuda.is_available():
        return ("bfloat16" if torch.cuda.is_bf16_supported() else "float16"), False
    return "float32", cpu_prefers_bf16()
