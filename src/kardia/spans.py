"""The four-span answer format: understanding, reasoning, emotion, response.

Two spellings exist (special tokens `<|response_begin|>...<|response_end|>` used by the model and the
paper, tags `<response>...</response>` used by the dataset card); both are read, also mixed. The parser
never raises: a broken answer gives `ok=False` and readable `problems`, which the format reward, the
eval metrics and the build filter all count. Only the response span is ever shown to a user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from .paths import resource_path

SPAN_NAMES: tuple[str, ...] = ("understanding", "reasoning", "emotion", "response")
SPAN_TOKENS: tuple[str, ...] = tuple(
    tok for name in SPAN_NAMES for tok in (f"<|{name}_begin|>", f"<|{name}_end|>")
)
STYLES = ("tokens", "tags")

_NAMES = "|".join(SPAN_NAMES)
# Lenient about case and inner blanks (`<Response>`, `</ response>`, `<| emotion_end |>`): models drift.
_MARKER = re.compile(
    rf"<\|\s*(?P<tname>{_NAMES})_(?P<tkind>begin|end)\s*\|>|<\s*(?P<slash>/)?\s*(?P<gname>{_NAMES})\s*>",
    re.IGNORECASE,
)
# Any other chat-template token, of any model family: `<|im_end|>`, `<|eot_id|>`, DeepSeek's full-width
# `<｜end▁of▁sentence｜>`, Gemma's `<end_of_turn>`, Llama 2's `</s>`: never shown to a user.
_ANY_SPECIAL = re.compile(
    r"<[|｜][A-Za-z0-9_.:▁ -]{1,64}[|｜]>|</?s>|<(?:start_of_turn|end_of_turn|eos|bos|pad|unk)>",
    re.IGNORECASE,
)
_MAX_PROBLEMS = 20
_SNIPPET = 40


@dataclass
class ParsedSpans:
    """What `parse` found. Values are stripped; `""` is a closed but empty span, None a missing one."""

    understanding: str | None = None
    reasoning: str | None = None
    emotion: str | None = None
    response: str | None = None
    ok: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in SPAN_NAMES}


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "...")


def parse(text: object) -> ParsedSpans:
    """Read the four spans from a model's answer; never raises, whatever `text` is."""
    out = ParsedSpans()
    if not isinstance(text, str):
        out.problems.append(f"not text: got {type(text).__name__}")
        return out
    problems: list[str] = []
    values: dict[str, str] = {}
    first_pos: dict[str, int] = {}  # order of first complete appearance
    counts: dict[str, int] = {}
    unclosed: list[str] = []
    stray_ends: dict[str, int] = {}
    stray_text: list[tuple[str, str]] = []  # (where, snippet)
    open_name: str | None = None
    open_at = 0  # where the open span's content starts
    cursor = 0  # end of the last consumed region
    last_closed: str | None = None

    def note_outside(start: int, end: int) -> None:
        chunk = text[start:end]
        if chunk.strip():
            where = f"after {last_closed}" if last_closed else "before the first span"
            stray_text.append((where, _snippet(chunk)))

    for m in _MARKER.finditer(text):
        name = (m.group("tname") or m.group("gname")).lower()
        is_end = (m.group("tkind") or "").lower() == "end" or bool(m.group("slash"))
        if not is_end:
            if open_name is not None:
                unclosed.append(f"{open_name} (the {name} span begins inside it)")
            else:
                note_outside(cursor, m.start())
            open_name, open_at = name, m.end()
            continue
        if open_name is None:
            note_outside(cursor, m.start())
            stray_ends[name] = stray_ends.get(name, 0) + 1
            cursor = m.end()
            continue
        if open_name != name:
            unclosed.append(f"{open_name} (closed by the {name} end marker)")
            open_name = None
            cursor = m.end()
            continue
        counts[name] = counts.get(name, 0) + 1
        if name not in values:
            values[name] = text[open_at : m.start()].strip()
            first_pos[name] = len(first_pos)
        open_name = None
        last_closed = name
        cursor = m.end()
    if open_name is not None:
        unclosed.append(f"{open_name} (no end marker before the text ends)")
    else:
        note_outside(cursor, len(text))

    for name in SPAN_NAMES:
        if name in values:
            if not values[name]:
                problems.append(f"empty: the {name} span has no text")
        elif not any(u.startswith(name + " ") for u in unclosed):
            problems.append(f"missing: no {name} span")
    for name in SPAN_NAMES:
        if counts.get(name, 0) > 1:
            problems.append(f"duplicated: {name} appears {counts[name]} times (the first is used)")
    seen = sorted(first_pos, key=first_pos.get)
    expected = [n for n in SPAN_NAMES if n in first_pos]
    if seen != expected:
        problems.append(f"out of order: found {' -> '.join(seen)}; expected {' -> '.join(SPAN_NAMES)}")
    for u in unclosed:
        problems.append(f"unclosed: {u}")
    for name, n in stray_ends.items():
        problems.append(f"stray end marker: {name} end without a begin" + (f" ({n} times)" if n > 1 else ""))
    for where, snip in stray_text[:3]:
        problems.append(f"stray text {where}: {snip}")
    if len(stray_text) > 3:
        problems.append(f"stray text: {len(stray_text) - 3} more pieces outside the spans")
    if len(problems) > _MAX_PROBLEMS:
        problems = problems[:_MAX_PROBLEMS] + [f"... and {len(problems) - _MAX_PROBLEMS} more problems"]

    for name, value in values.items():
        setattr(out, name, value)
    out.problems = problems
    out.ok = not problems
    return out


def _check_value(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"render: {name} must be a string, got {type(value).__name__}")
    if _MARKER.search(value):
        raise ValueError(f"render: the {name} text contains span markup, which would break the format: {_snippet(value)}")
    return value


def render(understanding: str, reasoning: str, emotion: str, response: str, style: str = "tokens") -> str:
    """Write the four spans, one per line, in either spelling (`tokens` for models, `tags` for cards)."""
    if style not in STYLES:
        raise ValueError(f"render: style must be one of {STYLES}, got {style!r}")
    values = dict(understanding=understanding, reasoning=reasoning, emotion=emotion, response=response)
    lines = []
    for name in SPAN_NAMES:
        value = _check_value(name, values[name])
        if style == "tokens":
            lines.append(f"<|{name}_begin|>{value}<|{name}_end|>")
        else:
            lines.append(f"<{name}>{value}</{name}>")
    return "\n".join(lines)


def strip_span_markup(text: str) -> str:
    """Remove every span token or tag (both spellings), so quoted data can never open or close a span.

    Repeats until nothing is left: removing `<response>` from `<<response>response>` would otherwise
    leave a fresh `<response>`.
    """
    if not isinstance(text, str):
        return ""
    while True:
        cleaned = _MARKER.sub("", text)
        if cleaned == text:
            return cleaned
        text = cleaned


@lru_cache(maxsize=1)
def fallback_message() -> str:
    """The warm reply shown when a model's answer is broken (a data file, so it can be reworded)."""
    return resource_path("spans", "fallback.txt").read_text(encoding="utf-8").strip()


def response_span(text: object) -> str | None:
    """The closed, non-empty response span with any special token removed; None when there is none."""
    response = parse(text).response
    if response:
        cleaned = _ANY_SPECIAL.sub("", response).strip()
        if cleaned:
            return cleaned
    return None


def visible_response(text: object) -> str:
    """What a user may see: the closed, non-empty response span, else the fallback. Never the reasoning."""
    return response_span(text) or fallback_message()
