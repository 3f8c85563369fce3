"""Where a dialogue starts: a situation with its gold emotion label (one of the 32).

Sources: EmpatheticDialogues situation CSVs (`text`, `label` id 0-31) and ESConv conversations (coarse
`emotion_type` mapped onto the 32 labels by the one ESConv map), both read by `kardia.corpora`, and our
own JSONL (`situation`, `emotion`).
An unknown label id or name is an error naming file, line and field (or skipped and counted).
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import BaseModel

from ..corpora import ed, esconv
from ..records import RecordError, converted, iter_jsonl
from ..emotions import LABEL_BY_ID, LABELS


class Seed(BaseModel):
    id: str
    situation: str
    emotion: str
    source: str


class SeedTable:
    """Situations held compactly: id and text as UTF-8 in one buffer, label and source as small codes.

    A build's plan must hold every situation (its shuffled pools decide the plan); as Seed objects each
    cost ~750 bytes, here ~100. Indexing gives back an equal Seed.
    """

    def __init__(self, seeds: Iterable[Seed] = ()):
        self._blob = bytearray()
        self._ends = array("q")  # end offsets: id of seed i, then its situation
        self._emotion, self._source = array("i"), array("i")
        self._names: list[str] = []
        self._codes: dict[str, int] = {}
        for seed in seeds:
            self.append(seed)

    def _code(self, name: str) -> int:
        if name not in self._codes:
            self._codes[name] = len(self._names)
            self._names.append(name)
        return self._codes[name]

    def append(self, seed: Seed) -> None:
        for text in (seed.id, seed.situation):
            self._blob += text.encode("utf-8")
            self._ends.append(len(self._blob))
        self._emotion.append(self._code(seed.emotion))
        self._source.append(self._code(seed.source))

    def __len__(self) -> int:
        return len(self._emotion)

    def emotion(self, i: int) -> str:
        return self._names[self._emotion[i]]

    def __getitem__(self, i: int) -> Seed:
        a = self._ends[2 * i - 1] if i else 0
        b, c = self._ends[2 * i], self._ends[2 * i + 1]
        return Seed.model_construct(id=self._blob[a:b].decode("utf-8"), situation=self._blob[b:c].decode("utf-8"),
                                    emotion=self._names[self._emotion[i]], source=self._names[self._source[i]])


def _labels():
    return LABELS, LABEL_BY_ID


def _clean(text: str) -> str:
    return " ".join(text.replace("_comma_", ",").split())


def _must_exist(p: Path, what: str) -> None:
    if not p.exists():
        raise FileNotFoundError(f"{p}: {what} file not found")


def ed_seeds(path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[Seed]:
    """EmpatheticDialogues situations (kardia.corpora.ed); `aug_text` is ignored on purpose."""
    p = Path(path)
    for s in ed.read_situations(p, skip_bad=skip_bad, bad=bad):
        yield Seed(id=f"ed:{p.stem}:{s.line}", situation=s.text, emotion=s.emotion, source="ed")


def esconv_seeds(
    path: str | Path, emotion_map: str | Path | None = None, skip_bad: bool = False, bad: list | None = None
) -> Iterator[Seed]:
    """ESConv seeker situations; `emotion_type` goes through the one ESConv map (approximate entries included)."""
    p = Path(path)
    map_arg = str(emotion_map) if emotion_map else None
    mapping = esconv.load_emotion_map(map_arg)

    def convert(line: int, rec: esconv.Dialogue) -> Seed:
        entry = mapping.get(rec.emotion_type.strip().lower())
        if entry is None or entry.label is None:
            raise RecordError(
                p, line, "emotion_type", f"{rec.emotion_type!r} has no mapping to the 32 labels in {esconv.map_file(map_arg)}"
            )
        text = _clean(rec.situation)
        if not text:
            raise RecordError(p, line, "situation", "missing or empty")
        return Seed(id=f"esconv:{p.stem}:{line}", situation=text, emotion=entry.label, source="esconv")

    yield from converted(esconv.read_dialogues(p, skip_bad=skip_bad, bad=bad), convert, skip_bad, bad)


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
