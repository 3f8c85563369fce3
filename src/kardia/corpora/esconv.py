"""ESConv emotional-support conversations, and the one map from its coarse `emotion_type` onto the 32 labels.

Build seeds and profiles, eval items and judge calibration read the same records through `read_dialogues`
and the same map through `load_emotion_map`, so the two uses can no longer disagree on a label.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..emotions import LABELS
from ..paths import resource_path
from ..records import iter_jsonl

MAP_FILE = ("emotions", "esconv_emotion_map.yaml")


class Turn(BaseModel):
    model_config = ConfigDict(extra="allow")
    text: str
    speaker: Literal["usr", "sys"]  # usr: the seeker; sys: the supporter


class Dialogue(BaseModel):
    """One ESConv record. `dialog` is None when the line has none (seeds and profiles do not need it)."""

    model_config = ConfigDict(extra="allow")
    emotion_type: str = ""
    problem_type: str = ""
    experience_type: str = ""
    situation: str = ""
    dialog: list[Turn] | None = None
    survey_score: dict[str, Any] = Field(default_factory=dict)

    @property
    def seeker_survey(self) -> dict:
        """The seeker's own ratings (empathy, relevance, ...), as given (strings in the public files)."""
        s = self.survey_score.get("seeker", {})
        return s if isinstance(s, dict) else {}

    def turns(self, sep: str) -> list[tuple[str, str]]:
        """(role, text) with consecutive lines of one speaker joined by `sep` (ESConv splits a turn
        into lines); role is user (seeker) or assistant (supporter); empty lines are dropped."""
        out: list[tuple[str, str]] = []
        for t in self.dialog or []:
            role = "assistant" if t.speaker == "sys" else "user"
            text = t.text.strip()
            if not text:
                continue
            if out and out[-1][0] == role:
                out[-1] = (role, out[-1][1] + sep + text)
            else:
                out.append((role, text))
        return out


def read_dialogues(path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[tuple[int, Dialogue]]:
    """(line, Dialogue) per JSONL line; a malformed line is a RecordError naming file, line and field."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: ESConv file not found")
    yield from iter_jsonl(p, model=Dialogue, skip_bad=skip_bad, bad=bad)


class EmotionMapEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None
    match: Literal["exact", "approximate", "none"]

    def gold(self, include_approximate: bool = True) -> str | None:
        """The label to score against: None for `none`, and for `approximate` unless included."""
        if self.match == "exact" or (self.match == "approximate" and include_approximate):
            return self.label
        return None


@lru_cache(maxsize=8)
def load_emotion_map(path: str | None = None) -> dict[str, EmotionMapEntry]:
    """emotion_type (lower-cased) -> entry, from `path` or the shipped resources/emotions map."""
    p = Path(path) if path else resource_path(*MAP_FILE)
    raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    out: dict[str, EmotionMapEntry] = {}
    for key, val in raw.items():
        try:
            entry = EmotionMapEntry.model_validate(val)
        except ValidationError as exc:
            raise ValueError(f"{p}: entry {key!r}: {exc.errors()[0]['msg']}") from None
        if entry.label is not None and entry.label not in LABELS:
            raise ValueError(f"{p}: entry {key!r}: {entry.label!r} is not one of the 32 labels")
        if (entry.label is None) != (entry.match == "none"):
            raise ValueError(f"{p}: entry {key!r}: label must be null exactly when match is none")
        out[str(key).strip().lower()] = entry
    return out


def map_file(path: str | None = None) -> Path:
    """The map a reader used, for error messages."""
    return Path(path) if path else resource_path(*MAP_FILE)
