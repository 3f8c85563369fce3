"""Who the simulated user is: profiles in KardiaBench's `person` form, read or built from real sources.

KardiaBench keeps a profile as ONE raw string (MBTI, About, Signature, Recent Activities). We read
that form from JSONL/CSV and build it from PersonaChat persona facts or ESConv situations, so the
loop never needs to know where a profile came from. A profile without an MBTI type keeps it empty
unless assignment is asked for, and then `mbti_assigned` says so (it ends up in the record's meta).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, Field

from ..corpora import esconv, personachat
from ..records import RecordError, converted

MBTI_TYPES = tuple(a + b + c + d for a in "EI" for b in "NS" for c in "TF" for d in "JP")
_MBTI_FIELD = re.compile(r"\bMBTI\s*(?:type)?\s*[:=]\s*([EIei][NSns][TFtf][JPjp])\b")
_MBTI_FREE = re.compile(r"\b([EI][NS][TF][JP])(?:-[AT])?s?\b")
_FIELDS = ("MBTI", "About", "Signature", "Recent Activities")


class Profile(BaseModel):
    """One simulated user. `person` is the raw KardiaBench-style string shown to every model."""

    id: str
    person: str
    mbti: str = ""
    mbti_assigned: bool = False
    username: str = ""
    source: str = ""
    meta: dict = Field(default_factory=dict)


def extract_mbti(text: str) -> str:
    """The MBTI type a profile states: an explicit `MBTI: xxxx` field first, else the first
    upper-case type in the text (e.g. "as an INFJ-T"). Empty when none is stated."""
    m = _MBTI_FIELD.search(text)
    if m:
        return m.group(1).upper()
    m = _MBTI_FREE.search(text)
    return m.group(1) if m else ""


def person_string(
    about: str = "", signature: str = "", recent: str = "", mbti: str = ""
) -> str:
    """Render the four KardiaBench fields as one string (empty fields are left out)."""
    parts = []
    for name, value in zip(_FIELDS, (mbti, about, signature, recent)):
        value = (value or "").strip()
        if value:
            parts.append(f"{name}: {value}")
    return "\n".join(parts)


def assign_mbti(profile: Profile, seed: int) -> Profile:
    """Give a profile without a type a reproducible random one, marked as assigned."""
    if profile.mbti:
        return profile
    rng = random.Random(_stable_int(f"{seed}:{profile.id}"))
    mbti = rng.choice(MBTI_TYPES)
    if re.search(r"^MBTI:[ \t]*$", profile.person, flags=re.M):  # an empty MBTI field: fill it
        person = re.sub(r"^MBTI:[ \t]*$", f"MBTI: {mbti}", profile.person, count=1, flags=re.M)
    else:
        person = f"MBTI: {mbti}\n{profile.person}"
    return profile.model_copy(update={"mbti": mbti, "mbti_assigned": True, "person": person})


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


# -- readers ---------------------------------------------------------------------------------------


def read_person_file(path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[Profile]:
    """KardiaBench-form profiles from JSONL (`{"person": ..., "username"?: ..., "id"?: ...}`) or CSV
    (a `person` column). Errors name file, line and field."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: profile file not found")
    rows: Iterator[tuple[int, dict]]
    if p.suffix.lower() == ".csv":
        rows = _csv_rows(p)
    else:
        rows = _jsonl_rows(p)
    seen: set[str] = set()
    yield from converted(rows, lambda line, row: _person_row(p, line, row, seen), skip_bad, bad)


def _jsonl_rows(p: Path) -> Iterator[tuple[int, dict]]:
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, {"__error__": f"not valid JSON ({exc.msg} at column {exc.colno})"}
                continue
            yield n, obj if isinstance(obj, dict) else {"__error__": f"expected a JSON object, got {type(obj).__name__}"}


def _csv_rows(p: Path) -> Iterator[tuple[int, dict]]:
    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "person" not in reader.fieldnames:
            raise RecordError(p, 1, "person", f"CSV header has no 'person' column (found {reader.fieldnames})")
        for row in reader:
            yield reader.line_num, row


def _person_row(p: Path, line: int, row: dict, seen: set[str]) -> Profile:
    if "__error__" in row:
        raise RecordError(p, line, None, row["__error__"])
    person = row.get("person")
    if not isinstance(person, str) or not person.strip():
        raise RecordError(p, line, "person", "missing or empty (expected the raw profile string)")
    username = row.get("username") or row.get("user") or ""
    if not isinstance(username, str):
        raise RecordError(p, line, "username", "expected a string")
    pid = str(row.get("id") or f"{p.stem}:{line}")
    if pid in seen:
        raise RecordError(p, line, "id", f"duplicate profile id {pid!r}")
    seen.add(pid)
    mbti = row.get("mbti") or extract_mbti(person)
    if not isinstance(mbti, str) or (mbti and mbti.upper() not in MBTI_TYPES):
        raise RecordError(p, line, "mbti", f"{mbti!r} is not one of the 16 MBTI types")
    return Profile(
        id=pid, person=person.strip(), mbti=mbti.upper(), username=username or pid, source=f"person:{p.name}"
    )


def personachat_profiles(path: str | Path) -> Iterator[Profile]:
    """Profiles from PersonaChat (kardia.corpora.personachat): each dialogue's persona facts become About.
    Identical persona sets (PersonaChat reuses them) give one profile."""
    seen: set[str] = set()
    for ps in personachat.read_persona_sets(path):
        key = " ".join(ps.facts).lower()
        if key in seen:
            continue
        seen.add(key)
        about = " ".join(_sentence(f) for f in ps.facts)
        pid = f"personachat:{ps.line}"
        yield Profile(
            id=pid, person=person_string(about=about), username=pid, source="personachat", meta={"line": ps.line},
        )


def _sentence(fact: str) -> str:
    fact = re.sub(r"\s+([.,!?'])", r"\1", fact.strip())
    fact = re.sub(r"\bi\b", "I", fact)
    return (fact[:1].upper() + fact[1:]) if fact else fact


def esconv_profiles(path: str | Path) -> Iterator[Profile]:
    """Profiles from ESConv seekers (kardia.corpora.esconv): the problem type is About, the situation is
    Recent Activities."""
    p = Path(path)
    for line, rec in esconv.read_dialogues(p):
        if not rec.situation.strip():
            raise RecordError(p, line, "situation", "missing or empty")
        pid = f"esconv:{p.stem}:{line}"
        about = f"Going through {rec.problem_type.lower()}." if rec.problem_type else ""
        yield Profile(
            id=pid, person=person_string(about=about, recent=rec.situation.strip()), username=pid, source="esconv",
        )


def load_profiles(kind: str, path: str | Path, skip_bad: bool = False, bad: list | None = None) -> Iterator[Profile]:
    """One entry point for every profile source named in a build config."""
    if kind == "person":
        return read_person_file(path, skip_bad=skip_bad, bad=bad)
    if kind == "personachat":
        return personachat_profiles(path)
    if kind == "esconv":
        return esconv_profiles(path)
    raise ValueError(f"unknown profile source kind {kind!r} (expected person, personachat or esconv)")
