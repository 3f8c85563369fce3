"""Turn-level evaluation items from KardiaBench JSONL, EmpatheticDialogues and ESConv.

Every assistant turn of a test dialogue becomes one `EvalItem` (the paper's turn-level QA pairs):
its history up to the user's last message, the profile and situation, and the gold emotion.
Loaders stream (memory stays flat) and reject malformed input with file, line and field
(`kardia.records.RecordError`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..corpora import ed, esconv
from ..records import RecordError, iter_jsonl
from ..dataset import DialogueRecord
from ..emotions import normalize
from ..data.loop import opening_from_situation

Format = Literal["auto", "kardia", "ed", "ed_situations", "esconv"]


class EvalItem(BaseModel):
    """One assistant turn to generate and score."""

    model_config = ConfigDict(extra="forbid")
    id: str  # unique across the data set: "<dialogue_id>#t<turn_index>"
    dataset: str  # kardia | ed | esconv
    dialogue_id: str
    turn_index: int  # 1-based index of this assistant turn in its dialogue
    profile: str = ""
    mbti: str = ""
    situation: str = ""
    gold_emotion: str | None = None  # None: no gold label (ESConv type without an ED equivalent)
    system: str | None = None  # the record's own system prompt (KardiaBench), else built at eval time
    history: list[dict[str, str]]  # user/assistant messages, ending with the user's turn
    gold_response: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


def detect_format(path: str | Path) -> str:
    """`.csv` is EmpatheticDialogues (conversations with `conv_id`, or situations with `text`, `label`);
    JSONL with `messages` is KardiaBench, with `dialog` is ESConv."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: file not found")
    if p.suffix.lower() == ".csv":
        with p.open("r", encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh), [])
        if "conv_id" in header:
            return "ed"
        if "text" in header and "label" in header:
            return "ed_situations"
        raise RecordError(p, 1, None, f"an ED CSV needs conv_id (conversations) or text and label (situations); header is {header}")
    with p.open("r", encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(p, n, None, f"not valid JSON ({exc.msg}); cannot tell the data format") from None
            if isinstance(obj, dict) and "messages" in obj:
                return "kardia"
            if isinstance(obj, dict) and "dialog" in obj:
                return "esconv"
            raise RecordError(p, n, None, "neither a KardiaBench record (messages) nor an ESConv record (dialog)")
    raise RecordError(p, 1, None, "file is empty")


def load_items(
    path: str | Path,
    fmt: Format = "auto",
    limit: int | None = None,
    esconv_include_approximate: bool = True,
    esconv_map: str | Path | None = None,
) -> Iterator[EvalItem]:
    """Stream the eval items of a file, at most `limit` of them (in file order)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "kardia":
        gen = _kardia_items(path)
    elif fmt == "ed":
        gen = _ed_items(path)
    elif fmt == "ed_situations":
        gen = _ed_situation_items(path)
    elif fmt == "esconv":
        gen = _esconv_items(path, esconv_include_approximate, esconv_map)
    else:
        raise ValueError(f"unknown data format {fmt!r}: use auto, kardia, ed or esconv")
    for i, item in enumerate(gen):
        if limit is not None and i >= limit:
            return
        yield item


# -- KardiaBench ---------------------------------------------------------------------------------
def _kardia_items(path: str | Path) -> Iterator[EvalItem]:
    for n, rec in iter_jsonl(path, model=DialogueRecord):
        gold = normalize(rec.emotion)
        if gold is None:
            raise RecordError(path, n, "emotion", f"{rec.emotion!r} is not one of the 32 emotion labels")
        system = rec.messages[0].content
        for t, (prompt, gold_content) in enumerate(rec.assistant_turns(), start=1):
            yield EvalItem(
                id=f"{rec.id}#t{t}",
                dataset="kardia",
                dialogue_id=rec.id,
                turn_index=t,
                profile=rec.person,
                mbti=rec.mbti,
                situation=rec.situation,
                gold_emotion=gold,
                system=system,
                history=[{"role": m["role"], "content": m["content"]} for m in prompt[1:]],
                gold_response=gold_content,
                meta={"line": n},
            )


# -- EmpatheticDialogues -------------------------------------------------------------------------
def _ed_items(path: str | Path) -> Iterator[EvalItem]:
    """ED conversations (kardia.corpora.ed): odd utterance_idx = the person who lived it (user), even =
    listener (generated)."""
    for conv in ed.read_conversations(path):
        history: list[dict[str, str]] = []
        turn = 0
        for u in conv.utterances:
            if u.idx % 2 == 1:
                history.append({"role": "user", "content": u.text})
                continue
            turn += 1
            yield EvalItem(
                id=f"{conv.conv_id}#t{turn}",
                dataset="ed",
                dialogue_id=conv.conv_id,
                turn_index=turn,
                situation=conv.situation,
                gold_emotion=conv.emotion,
                history=list(history),
                gold_response=u.text,
                meta={"line": u.line},
            )
            history.append({"role": "assistant", "content": u.text})


def _ed_situation_items(path: str | Path) -> Iterator[EvalItem]:
    """ED situation CSVs (`text`, `aug_text`, `label`): the person opens by telling the situation, as in ED.

    One item per row, no profile; `aug_text` (a machine paraphrase) is ignored. Read through the same
    corpus reader as `kardia build`'s seeds, so a bad label id fails the same way (file, line, field).
    """

    p = Path(path)
    for s in ed.read_situations(p):
        yield EvalItem(
            id=f"{p.stem}:{s.line}",
            dataset="ed_situations",
            dialogue_id=f"{p.stem}:{s.line}",
            turn_index=1,
            situation=s.text,
            gold_emotion=s.emotion,
            history=[{"role": "user", "content": opening_from_situation(s.text)}],
            meta={"line": s.line},
        )


# -- ESConv ----------------------------------------------------------------------------------------
def _esconv_items(path: str | Path, include_approximate: bool, map_path: str | Path | None) -> Iterator[EvalItem]:
    """ESConv (kardia.corpora.esconv): merge runs of one speaker into a turn; generate each supporter turn
    after a seeker turn."""
    mapping = esconv.load_emotion_map(str(map_path) if map_path else None)
    p = Path(path)
    for n, rec in esconv.read_dialogues(p):
        key = rec.emotion_type.strip().lower()
        if key not in mapping:
            raise RecordError(p, n, "emotion_type", f"{rec.emotion_type!r} is not in the ESConv emotion map")
        if rec.dialog is None:
            raise RecordError(p, n, "dialog", "Field required")
        for i, t in enumerate(rec.dialog):
            if not t.text.strip():
                raise RecordError(p, n, f"dialog.{i}.text", "empty utterance")
        entry = mapping[key]
        gold = entry.gold(include_approximate)
        blocks = rec.turns("\n")
        while blocks and blocks[0][0] == "assistant":  # an opening greeting before the seeker speaks
            blocks.pop(0)
        dialogue_id = f"esconv-{p.stem}-{n}"
        seeker = rec.seeker_survey
        profile = f"Problem: {rec.problem_type}. Experience: {rec.experience_type}.".strip()
        history: list[dict[str, str]] = []
        turn = 0
        for role, text in blocks:
            if role == "user":
                history.append({"role": "user", "content": text})
                continue
            turn += 1
            yield EvalItem(
                id=f"{dialogue_id}#t{turn}",
                dataset="esconv",
                dialogue_id=dialogue_id,
                turn_index=turn,
                profile=profile,
                situation=rec.situation.strip(),
                gold_emotion=gold,
                history=list(history),
                gold_response=text,
                meta={
                    "line": n,
                    "emotion_type": rec.emotion_type,
                    "emotion_match": entry.match,
                    "seeker_empathy": seeker.get("empathy"),
                },
            )
            history.append({"role": "assistant", "content": text})
