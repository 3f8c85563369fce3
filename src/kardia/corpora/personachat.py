"""PersonaChat (ParlAI text format): each dialogue opens with `1 your persona: ...` lines, 4-5 facts.

Build profiles from these facts; the reader yields every dialogue's set, in file order (deduplication
of the sets PersonaChat reuses is the profile builder's choice).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from pydantic import BaseModel

_PREFIX = "your persona:"


class PersonaSet(BaseModel):
    line: int  # the line of the dialogue's first persona fact
    facts: list[str]


def read_persona_sets(path: str | Path) -> Iterator[PersonaSet]:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: PersonaChat file not found")
    facts: list[str] = []
    start = 0
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            num, _, rest = line.strip().partition(" ")
            if rest.startswith(_PREFIX):
                if num == "1":
                    if facts:
                        yield PersonaSet(line=start, facts=facts)
                    facts, start = [], n
                facts.append(rest[len(_PREFIX):].strip())
    if facts:
        yield PersonaSet(line=start, facts=facts)
