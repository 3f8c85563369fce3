"""Scoring a JSONL file of items, streamed and resumable: a loop body on `kardia.jobs` (up to
`batch_size` items in flight, so the backend batches them; append + fsync per item, done ids skipped).

An item whose judge *call* failed (error_kind "call": timeout, server down) is not written, so the next
run retries it; an unparseable answer is written as a counted failure.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field

from ..jobs import JobBar, RetryLater, run_jobs
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


def _inputs(path: str) -> Iterator[tuple[Any, JudgeItem]]:
    """(key, item) per input line, streamed; a repeated id is an error (its results would be ambiguous)."""
    seen: set = set()
    for n, rec in iter_jsonl(path, model=ScoreInput):
        key = rec.id if rec.id is not None else f"line-{n}"
        if key in seen:
            raise ValueError(f"{path}:{n}: field id: duplicate id {key!r}")
        seen.add(key)
        yield key, JudgeItem(profile=rec.profile, situation=rec.situation, history=rec.history, response=rec.response, id=str(key))


async def _score_one(judge: Judge, key: Any, item: JudgeItem) -> dict:
    res = await judge.ascore(item)
    if res.error_kind == "call":  # the judge was not reached: not written, retried on the next run
        raise RetryLater(res.error)
    return result_record(key, res)


async def _score(cfg, judge: Judge, progress: bool = False) -> tuple[int, list[str]]:
    out = Path(cfg.output)
    done = done_keys(out, "id")
    total = _count_lines(Path(cfg.input))
    with JobBar("judge", total, completed=len(done), enabled=progress, description="judging") as bar, JsonlAppender(out) as w:
        stats = await run_jobs(_inputs(cfg.input), lambda pair: _score_one(judge, *pair), w, key=lambda pair: pair[0],
                               done=done, concurrency=cfg.batch_size, ordered=True, bar=bar)
    return stats.written, [f"{key}: {msg}" for key, msg in stats.retried]


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
    new, to_retry = asyncio.run(_score(cfg, judge, show_progress))
    summary = summarise(Path(cfg.output))
    summary["new"] = new
    summary["call_failures_to_retry"] = to_retry
    Path(str(cfg.output) + ".summary.json").write_text(json.dumps(summary, indent=2))
    return summary
