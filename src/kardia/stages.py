"""Recipes as named stages that resume: a finished stage leaves `DIR/stages/<name>.json`, a rerun skips it.

`kardia demo` and `kardia reproduce` are plain sequences of stages over the real components; this is
the one mechanism that makes both resumable (the stages resume inside too: build and eval per item,
training from its last checkpoint). Each stage prints a header, and its time and result are kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence


def stage_done(out: Path, stage: str) -> dict | None:
    p = out / "stages" / f"{stage}.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None


def mark_done(out: Path, stage: str, summary: dict) -> dict:
    d = out / "stages"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{stage}.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    tmp.replace(d / f"{stage}.json")
    return summary


def run_stages(out: Path, steps: Sequence[tuple[str, Callable[[dict], Any]]], console) -> tuple[dict, dict]:
    """Run each (name, fn(results so far)) unless done earlier. Returns (results, seconds per stage)."""
    results: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for i, (stage, fn) in enumerate(steps, 1):
        previous = stage_done(out, stage)
        if previous is not None:
            console.rule(f"[dim]{i}/{len(steps)} {stage}: done earlier, skipped")
            results[stage] = previous["result"]
            timings[stage] = previous["seconds"]
            continue
        console.rule(f"[bold]{i}/{len(steps)} {stage}")
        t0 = time.monotonic()
        result = fn(results)
        timings[stage] = round(time.monotonic() - t0, 1)
        results[stage] = result
        mark_done(out, stage, {"seconds": timings[stage], "result": result})
        console.print(f"[green]{stage} finished in {timings[stage]:.0f} s")
    return results, timings
