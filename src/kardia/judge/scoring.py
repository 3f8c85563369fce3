"""Scoring a JSONL file of items, streamed and resumable (append + fsync per item, done ids skipped).

An item whose judge *call* failed (error_kind "call": timeout, server down) is not written, so the next
run retries it; an unparseable answer is written as a counted failure.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..records import JsonlAppender, done_keys, iter_jsonl
from .core import Judge, JudgeItem, result_record


class ScoreInput(BaseModel):
    id: str | int | None = None
    profile: str = ""
    situation: str = ""
    history: list[dict] = Field(default_factory=list)
    response: str


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


async def _score(cfg, judge: Judge, progress=None) -> tuple[int, list[str]]:
    out = Path(cfg.output)
    done = done_keys(out, "id")
    total = _count_lines(Path(cfg.input))
    task = progress.add_task("judging", total=total, completed=len(done)) if progress else None
    new = 0
    to_retry: list[str] = []
    batch: list[tuple[Any, JudgeItem]] = []
    seen: set = set()
    with JsonlAppender(out) as w:

        async def flush() -> None:
            nonlocal new
            results = await judge.ascore_many([it for _, it in batch])
            for (key, _), res in zip(batch, results):
                if res.error_kind == "call":
                    to_retry.append(f"{key}: {res.error}")
                    continue
                w.write(result_record(key, res))
                new += 1
            if progress:
                progress.advance(task, len(batch))
            batch.clear()

        for n, rec in iter_jsonl(cfg.input, model=ScoreInput):
            key = rec.id if rec.id is not None else f"line-{n}"
            if key in seen:
                raise ValueError(f"{cfg.input}:{n}: field id: duplicate id {key!r}")
            seen.add(key)
            if key in done:
                continue
            batch.append((key, JudgeItem(profile=rec.profile, situation=rec.situation, history=rec.history, response=rec.response, id=str(key))))
            if len(batch) >= cfg.batch_size:
                await flush()
        if batch:
            await flush()
    return new, to_retry


def summarise(path: Path) -> dict:
    """Means per dimension and failure count, streamed from the per-item file."""
    sums: dict[str, list[float]] = {}
    items = scored = failures = 0
    for _, r in iter_jsonl(path):
        items += 1
        if r.get("scores"):
            scored += 1
            for k, v in r["scores"].items():
                sums.setdefault(k, [0.0, 0])  # type: ignore[arg-type]
                sums[k][0] += v
                sums[k][1] += 1
            sums.setdefault("reward", [0.0, 0])  # type: ignore[arg-type]
            sums["reward"][0] += r["reward"]
            sums["reward"][1] += 1
        else:
            failures += 1
    means = {k: (s / n if n else None) for k, (s, n) in sums.items()}
    return {"output": str(path), "items": items, "scored": scored, "failures": failures, "means": means}


def score_file(cfg, show_progress: bool = True) -> dict:
    options = cfg.llm_options.for_model(cfg.model) if getattr(cfg, "llm_options", None) is not None else {}
    judge = Judge(cfg.model, rubric=cfg.rubric, mode=cfg.mode, scorer=cfg.scorer, parse_retries=cfg.parse_retries,
                  llm_options=options)
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as progress:
            new, to_retry = asyncio.run(_score(cfg, judge, progress))
    else:
        new, to_retry = asyncio.run(_score(cfg, judge))
    summary = summarise(Path(cfg.output))
    summary["new"] = new
    summary["call_failures_to_retry"] = to_retry
    Path(str(cfg.output) + ".summary.json").write_text(json.dumps(summary, indent=2))
    return summary
