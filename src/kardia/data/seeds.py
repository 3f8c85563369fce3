"""Where a dialogue starts: a situation with its gold emotion label (one of the 32).

Sources: EmpatheticDialogues situation CSVs (`text`, `label` id 0-31), ESConv conversations (coarse
`emotion_type` mapped onto the 32 labels by a data file), and our own JSONL (`situation`, `emotion`).
An unknown label id or name is an error naming file, line and field (or skipped and counted).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

import yaml
from pydantic import BaseModel

from ..paths import resource_path
from ..records import RecordError, converted, iter_jsonl


class Seed(BaseModel):
    id: str
    situation: str
    emotion: str
    source: str


def _labels():
    from ..emotions import LABEL_BY_ID, LABELS

    return LABELS, LABEL_BY_ID


def _clean(text: str) -> str:
    return " ".join(text.replace("_comma_", ",").split())


def _must_exist(p: Path, what: str) -> None:
    if not p.exists():
        raise FileNotFoundError(f"{p}: {what} file not found")


def ed_seeds(path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[Seed]:
    """EmpatheticDialogues situations; `aug_text` (a machine paraphrase) is ignored on purpose."""
    p = Path(path)
    _must_exist(p, "EmpatheticDialogues")
    labels, by_id = _labels()

    def convert(line: int, row: dict) -> Seed:
        raw = (row.get("label") or "").strip()
        try:
            label_id = int(raw)
        except ValueError:
            raise RecordError(p, line, "label", f"label id {raw!r} is not an integer") from None
        if label_id not in by_id:
            raise RecordError(p, line, "label", f"unknown label id {label_id} (expected 0-{len(labels) - 1})")
        text = _clean(row.get("text") or "")
        if not text:
            raise RecordError(p, line, "text", "empty situation")
        return Seed(id=f"ed:{p.stem}:{line}", situation=text, emotion=by_id[label_id], source="ed")

    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        for need in ("text", "label"):
            if need not in cols:
                raise RecordError(p, 1, need, f"CSV header has no {need!r} column (found {cols})")
        yield from converted(((reader.line_num, row) for row in reader), convert, skip_bad, bad)


def esconv_seeds(
    path: str | Path, emotion_map: str | Path | None = None, skip_bad: bool = False, bad: list | None = None
) -> Iterator[Seed]:
    """ESConv seeker situations; `emotion_type` goes through `esconv_emotion_map.yaml`."""
    p = Path(path)
    _must_exist(p, "ESConv")
    labels, _ = _labels()
    map_path = Path(emotion_map) if emotion_map else resource_path("samples", "esconv_emotion_map.yaml")
    mapping = yaml.safe_load(map_path.read_text(encoding="utf-8")) or {}

    def convert(line: int, obj: object) -> Seed:
        if not isinstance(obj, dict):
            raise RecordError(p, line, None, "expected a JSON object")
        etype = obj.get("emotion_type")
        label = mapping.get(etype) if isinstance(etype, str) else None
        if label not in labels:
            raise RecordError(p, line, "emotion_type", f"{etype!r} has no mapping to the 32 labels in {map_path}")
        text = _clean(obj.get("situation") or "")
        if not text:
            raise RecordError(p, line, "situation", "missing or empty")
        return Seed(id=f"esconv:{p.stem}:{line}", situation=text, emotion=label, source="esconv")

    yield from converted(iter_jsonl(p, skip_bad=skip_bad, bad=bad), convert, skip_bad, bad)


def jsonl_seeds(path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[Seed]:
    """Our own situations: `{"situation": ..., "emotion": <label or id>, "id"?: ...}` per line."""
    p = Path(path)
    _must_exist(p, "situations")
    labels, by_id = _labels()

    def convert(line: int, obj: object) -> Seed:
        if not isinstance(obj, dict):
            raise RecordError(p, line, None, "expected a JSON object")
        emo = obj.get("emotion")
        if isinstance(emo, int) and not isinstance(emo, bool):
            if emo not in by_id:
                raise RecordError(p, line, "emotion", f"unknown label id {emo}")
            emo = by_id[emo]
        if emo not in labels:
            raise RecordError(p, line, "emotion", f"{emo!r} is not one of the 32 labels")
        text = _clean(str(obj.get("situation") or ""))
        if not text:
            raise RecordError(p, line, "situation", "missing or empty")
        return Seed(id=str(obj.get("id") or f"{p.stem}:{line}"), situation=text, emotion=emo, source=p.stem)

    yield from converted(iter_jsonl(p, skip_bad=skip_bad, bad=bad), convert, skip_bad, bad)


def load_seeds(
    kind: str, path: str | Path, skip_bad: bool = False, bad: list | None = None, emotion_map: str | None = None
) -> Iterator[Seed]:
    if kind == "ed":
        return ed_seeds(path, skip_bad=skip_bad, bad=bad)
    if kind == "esconv":
        return esconv_seeds(path, emotion_map=emotion_map, skip_bad=skip_bad, bad=bad)
    if kind == "jsonl":
        return jsonl_seeds(path, skip_bad=skip_bad, bad=bad)
    raise ValueError(f"unknown seed source kind {kind!r} (expected ed, esconv or jsonl)")
