"""An eval run's per-item results as compact numeric columns, read in one streaming pass.

A report needs a handful of numbers per item (rates, judged scores, labels, groups) and a few whole
records (the worst-scored examples); holding every record (~1.4 KB each as Python objects) made the
report's memory grow with the run. Here each item costs a few machine words: `array` columns with NaN
for "not applicable", labels and groups as small integer codes, counters for the tallies, and a
bounded, deterministic set of example records.
"""

from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from ..judge.core import legacy_error_kind
from .results import iter_results

NAN = float("nan")
RATE_COLUMNS = ("emotion_accuracy", "near_miss_accuracy", "emotion_named", "format_validity")
# Per-group tables of the report: the group an item falls in, as the report names it.
GROUPS: dict[str, Callable[[dict], str]] = {
    "emotion": lambda r: r.get("gold_emotion") or "(no gold)",
    "mbti": lambda r: r.get("mbti") or "(unknown)",
    "turn": lambda r: str(r.get("turn_index")),
}
WORST_K = 5  # worst-scored examples a report shows


def _value(x: Any) -> float:
    return NAN if x is None else float(x)


def _flag(x: Any) -> float:
    return NAN if x is None else float(bool(x))


def judged_mean(r: dict) -> float | None:
    """Mean of an item's judged dimensions (None when the judge failed or did not run)."""
    scores = (r.get("judge") or {}).get("scores")
    if not scores:
        return None
    return float(sum(scores.values()) / len(scores))


def _failure_kind(judgement: dict[str, Any]) -> str:
    """call or parse, from the record's `error_kind` (records written before the field: from the message)."""

    error = judgement.get("error")
    if not error:
        return "no scores"
    return judgement.get("error_kind") or legacy_error_kind(error) or "parse"


class _Codes:
    """Strings interned to small integer codes (first-seen order), stored per item as int32."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}
        self.codes = array("i")

    def code(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            i = self._index[name] = len(self.names)
            self.names.append(name)
        return i

    def add(self, name: str | None) -> None:
        self.codes.append(-1 if name is None else self.code(name))

    def array(self) -> np.ndarray:
        return np.frombuffer(self.codes, dtype=np.int32) if len(self.codes) else np.zeros(0, dtype=np.int32)


class ItemColumns:
    """Everything `compute_metrics` and the report read from the per-item records, added one by one."""

    def __init__(self, keep_worst: int = WORST_K) -> None:
        self.n = 0
        self.dialogues = _Codes()
        self.values: dict[str, array] = {k: array("d") for k in RATE_COLUMNS}
        self.dims: list[str] = []  # judged dimensions, in the order the judge wrote them
        self.scores: dict[str, array] = {}
        self.judged = array("d")
        self.crisis = array("d")
        self.gold = _Codes()  # gold emotion (None when the item has none)
        self.pred = _Codes()  # predicted emotion (None when none was read)
        self.groups = {k: _Codes() for k in GROUPS}
        self.judge_ran = 0
        self.judge_scored = 0
        self.failure_kinds: Counter = Counter()
        self.no_response = 0
        self.judge_skipped = 0
        self.emotion_parse: Counter = Counter()
        self.at_risk = 0
        self.gold_count: Counter = Counter()
        self.pred_count: Counter = Counter()  # over items with a gold label; "(none)" when none was read
        self.pairs: Counter = Counter()  # (gold, predicted or None) over items with a gold label
        self.keep_worst = keep_worst
        self._worst: list[tuple[float, str, dict]] = []

    @classmethod
    def of(cls, records: Iterable[dict]) -> "ItemColumns":
        cols = cls()
        for r in records:
            cols.add(r)
        return cols

    def add(self, r: dict) -> None:
        gold = r.get("gold_emotion") or None
        pred = r.get("pred_emotion") or None
        self.dialogues.add(r["dialogue_id"])
        v = self.values
        v["emotion_accuracy"].append(_flag(r.get("emotion_correct")) if gold else NAN)
        v["near_miss_accuracy"].append(_flag(r.get("family_correct")) if gold else NAN)
        v["emotion_named"].append(float(bool(pred)) if gold else NAN)
        v["format_validity"].append(_flag(r.get("format_ok")))
        judge = r.get("judge")
        scores = (judge or {}).get("scores") or {}
        for d in scores:
            if d not in self.scores:
                self.dims.append(d)
                self.scores[d] = array("d", [NAN]) * self.n
        for d, col in self.scores.items():
            col.append(_value(scores.get(d)))
        jm = judged_mean(r)
        self.judged.append(_value(jm))
        at_risk = bool((r.get("risk") or {}).get("at_risk"))
        self.crisis.append(_flag(r.get("crisis_handled")) if at_risk else NAN)
        self.gold.add(gold)
        self.pred.add(pred)
        for k, getter in GROUPS.items():
            self.groups[k].add(getter(r))
        if judge is not None and not judge.get("skipped"):
            self.judge_ran += 1
            if judge.get("scores"):
                self.judge_scored += 1
            else:
                self.failure_kinds[_failure_kind(judge)] += 1
        self.no_response += bool(r.get("no_response"))
        self.judge_skipped += bool((judge or {}).get("skipped"))
        self.at_risk += at_risk
        if gold:
            self.emotion_parse[r.get("emotion_parse") or "none"] += 1
            self.gold_count[gold] += 1
            self.pred_count[pred or "(none)"] += 1
            self.pairs[(gold, pred)] += 1
        if jm is not None and self.keep_worst:
            self._worst.append((jm, r["id"], r))
            if len(self._worst) > 4 * self.keep_worst:
                self._trim()
        self.n += 1

    def _trim(self) -> None:
        self._worst.sort(key=lambda x: (x[0], x[1]))
        del self._worst[self.keep_worst:]

    def worst(self) -> list[dict]:
        """The lowest judged means, ties by id: the same records a full sort of every item would give."""
        self._trim()
        return [r for _, _, r in self._worst]

    def column(self, name: str) -> np.ndarray:
        """One averaged metric per item, NaN where it does not apply."""
        if name in self.values:
            col = self.values[name]
        elif name == "judged_mean":
            col = self.judged
        elif name == "crisis_handling":
            col = self.crisis
        else:
            col = self.scores[name]
        return np.frombuffer(col, dtype=np.float64) if len(col) else np.zeros(0)


def read_columns(out: str | Path) -> ItemColumns:
    """The columns of an eval folder's results.jsonl, streamed (see `results.iter_results`)."""

    return ItemColumns.of(iter_results(out))
