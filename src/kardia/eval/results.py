"""An eval folder's storage: per-item records (results.jsonl) and how the run was set up (run.json).

Its own room so the run (which writes them) and the report (which reads them) both depend on it and
not on each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ..records import RecordError, iter_jsonl

RESULTS = "results.jsonl"
RUN_FILE = "run.json"
# What runs written before a setting existed did, where that differs from the setting's default.
BEFORE_SETTING = {"no_response": "fallback"}


def iter_results(out: str | Path) -> Iterator[dict]:
    """The per-item records of an eval folder, one at a time (one per id; a later duplicate is an error)."""
    path = Path(out) / RESULTS
    seen: set[str] = set()
    for n, rec in iter_jsonl(path):
        if rec.get("id") in seen:
            raise RecordError(path, n, "id", f"duplicate item {rec.get('id')!r}")
        seen.add(rec.get("id"))
        yield rec


def read_results(out: str | Path) -> list[dict]:
    """The per-item records of an eval folder, as a list (see `iter_results`)."""
    return list(iter_results(out))


def run_info(out: Path) -> dict[str, Any]:
    """How an eval folder's run was set up (from its run.json), as reports and compare show it."""
    run = json.loads((out / RUN_FILE).read_text(encoding="utf-8")) if (out / RUN_FILE).exists() else {}
    ident = run.get("identity", {})
    return {"model": ident.get("model"), "mode": run.get("mode"), "judge": ident.get("judge"),
            "rubric": ident.get("rubric"), "data": ident.get("data"), "total_items": run.get("total_items"),
            "emotion_reader": ident.get("emotion_reader", "text"),
            "no_response": ident.get("no_response", BEFORE_SETTING["no_response"]),
            "judge_limit": ident.get("judge_limit"),
            "wall_s": sum(r.get("wall_s", 0) for r in run.get("runs", []))}
