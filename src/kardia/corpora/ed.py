"""EmpatheticDialogues: situation CSVs (`text`, `aug_text`, `label` id 0-31) and conversation CSVs
(one row per utterance). Read once here for build seeds and eval items; `_comma_` stands for a comma.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

from ..emotions import LABEL_BY_ID, LABELS
from ..records import RecordError, converted

CONVERSATION_COLUMNS = ("conv_id", "utterance_idx", "prompt", "utterance", "label")


class Situation(BaseModel):
    """One situation row: `text` with `_comma_` restored and whitespace collapsed, its gold label."""

    line: int
    text: str
    emotion: str


class Utterance(BaseModel):
    line: int
    idx: int  # odd: the person who lived the situation; even: the listener
    text: str


class Conversation(BaseModel):
    conv_id: str
    emotion: str
    situation: str  # the `prompt` column
    utterances: list[Utterance]


def _clean(text: str) -> str:
    return " ".join(text.replace("_comma_", ",").split())


def _text(s: str) -> str:
    return s.replace("_comma_", ",").strip()


def read_situations(path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[Situation]:
    """Situation rows; `aug_text` (a machine paraphrase) is ignored on purpose."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: EmpatheticDialogues file not found")

    def convert(line: int, row: dict) -> Situation:
        raw = (row.get("label") or "").strip()
        try:
            label_id = int(raw)
        except ValueError:
            raise RecordError(p, line, "label", f"label id {raw!r} is not an integer") from None
        if label_id not in LABEL_BY_ID:
            raise RecordError(p, line, "label", f"unknown label id {label_id} (expected 0-{len(LABELS) - 1})")
        text = _clean(row.get("text") or "")
        if not text:
            raise RecordError(p, line, "text", "empty situation")
        return Situation(line=line, text=text, emotion=LABEL_BY_ID[label_id])

    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for need in ("text", "label"):
            if need not in cols:
                raise RecordError(p, 1, need, f"CSV header has no {need!r} column (found {cols})")
        yield from converted(((reader.line_num, row) for row in reader), convert, skip_bad, bad)


def read_conversations(path: str | Path) -> Iterator[Conversation]:
    """Conversations in file order; rows of one `conv_id` must be contiguous, numbered 1, 2, ... with one label."""
    p = Path(path)
    rows: list[tuple[int, int, dict]] = []  # (line, idx, row)
    with p.open("r", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CONVERSATION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise RecordError(p, 1, missing[0], f"missing column (header has {reader.fieldnames})")
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(c) is None for c in CONVERSATION_COLUMNS):
                raise RecordError(p, line, None, f"expected {len(reader.fieldnames)} columns")
            try:
                idx = int(row["utterance_idx"])
            except ValueError:
                raise RecordError(p, line, "utterance_idx", f"not an integer: {row['utterance_idx']!r}") from None
            try:
                LABEL_BY_ID[int(row["label"])]
            except (ValueError, KeyError, IndexError):
                raise RecordError(p, line, "label", f"not an emotion label id 0-31: {row['label']!r}") from None
            if not row["conv_id"].strip():
                raise RecordError(p, line, "conv_id", "empty")
            if rows and row["conv_id"] != rows[0][2]["conv_id"]:
                yield _conversation(p, rows)
                rows = []
            if rows and idx != rows[-1][1] + 1:
                raise RecordError(p, line, "utterance_idx", f"expected {rows[-1][1] + 1} after {rows[-1][1]}, got {idx}")
            if not rows and idx != 1:
                raise RecordError(p, line, "utterance_idx", f"a conversation must start at 1, got {idx}")
            rows.append((line, idx, row))
    if rows:
        yield _conversation(p, rows)


def _conversation(p: Path, rows: list[tuple[int, int, dict]]) -> Conversation:
    first = rows[0][2]
    labels = {r["label"] for _, _, r in rows}
    if len(labels) > 1:
        raise RecordError(p, rows[-1][0], "label", f"conversation {first['conv_id']} has several labels {sorted(labels)}")
    return Conversation(
        conv_id=first["conv_id"],
        emotion=LABEL_BY_ID[int(first["label"])],
        situation=_text(first["prompt"]),
        utterances=[Utterance(line=line, idx=idx, text=_text(r["utterance"])) for line, idx, r in rows],
    )
