"""Reading a judge's answer without guessing.

`parse_scores` accepts JSON (bare, in code fences, or with prose around it) and `Dimension: n` lines.
Anything ambiguous is an error, never a default: a missing dimension, a score out of range or not an
integer, two different scores for one dimension, or no score at all raise `JudgeParseError`. The
OpenAI-evals habit of turning an unreadable verdict into the minimum score is exactly what this avoids.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Sequence

from .rubric import Dimension


class JudgeParseError(ValueError):
    """The judge's text does not say one clear, in-range score per dimension (or one verdict)."""


_SINGLE_ALIASES = ("score", "rating", "result", "value", "grade")
_NAME_KEYS = ("dimension", "name", "criterion", "criteria", "aspect", "key")
_SCORE_KEYS = ("score", "rating", "value", "grade", "result")
_REASON_KEYS = ("reason", "reasoning", "rationale", "explanation", "feedback", "justification", "why")
_MAX_JSON_STARTS = 2000  # bound the scan on pathological inputs (thousands of "{")

_LINE = re.compile(
    r"^[ \t]*(?:[-*•#>]+[ \t]*)*(?:\d+[.)][ \t]+)?\**[ \t]*(?P<name>[A-Za-z][A-Za-z _\-]{0,60}?)[ \t]*\**[ \t]*"
    r"[:=][ \t]*\**[ \t]*(?P<num>[+-]?\d+(?:\.\d+)?)(?![\d.]*\d)\**(?P<rest>[^\n]*)$",
    re.MULTILINE,
)
_RESULT = re.compile(r"\[RESULT\][ \t]*(?P<num>[+-]?\d+(?:\.\d+)?)", re.IGNORECASE)
_RANGE_REST = re.compile(r"^\s*(?:-|–|—|to)\s*\d")
_DENOM_REST = re.compile(r"^\s*(?:/|out\s+of)\s*(\d+)", re.IGNORECASE)


def _norm(s: str) -> str:
    return re.sub(r"[^0-9a-z]", "", str(s).lower())


def _names(dimensions: Iterable[str | Dimension]) -> list[tuple[str, set[str]]]:
    out = []
    for d in dimensions:
        if isinstance(d, Dimension):
            out.append((d.key, {_norm(d.key), _norm(d.name)}))
        else:
            out.append((str(d), {_norm(d)}))
    if not out:
        raise ValueError("parse_scores needs at least one dimension")
    return out


def _alias_map(dimensions, single_aliases: bool) -> dict[str, str]:
    names = _names(dimensions)
    amap: dict[str, str] = {}
    for key, aliases in names:
        for a in aliases:
            amap[a] = key
            for suffix in ("score", "rating"):
                amap[a + suffix] = key
    if single_aliases and len(names) == 1:
        for a in _SINGLE_ALIASES:
            amap.setdefault(a, names[0][0])
    return amap


def iter_json_objects(text: str) -> list[tuple[dict, int, int]]:
    """Every top-level JSON object found in `text`, with its span (code fences and prose are skipped)."""
    decoder = json.JSONDecoder()
    found: list[tuple[dict, int, int]] = []
    i = text.find("{")
    tries = 0
    while i >= 0 and tries < _MAX_JSON_STARTS:
        tries += 1
        try:
            obj, end = decoder.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError, ValueError):
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append((obj, i, end))
        i = text.find("{", end)
    return found


class _Bad:
    """A value given for a dimension that is not a usable score (kept to report, never to guess)."""

    def __init__(self, raw: Any, why: str):
        self.raw, self.why = raw, why

    def __repr__(self) -> str:
        return f"{self.raw!r} ({self.why})"


def _as_score(value: Any) -> int | _Bad:
    if isinstance(value, bool) or value is None:
        return _Bad(value, "not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else _Bad(value, "not an integer")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([+-]?\d+)(?:\s*/\s*\d+)?\s*", value)
        if m:
            return int(m.group(1))
        return _Bad(value, "not an integer score")
    return _Bad(value, f"a {type(value).__name__}, not a score")


def _walk(obj: Any, amap: dict[str, str], found: dict[str, list], depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(obj, list):
        for x in obj:
            _walk(x, amap, found, depth + 1)
        return
    if not isinstance(obj, dict):
        return
    # list-of-records form: {"dimension": "Empathy", "score": 4}
    name_vals = [v for k, v in obj.items() if _norm(k) in _NAME_KEYS and isinstance(v, str)]
    score_vals = [v for k, v in obj.items() if _norm(k) in _SCORE_KEYS]
    if len(name_vals) == 1 and _norm(name_vals[0]) in amap and score_vals:
        key = amap[_norm(name_vals[0])]
        for v in score_vals:
            found.setdefault(key, []).append(_as_score(v))
    for k, v in obj.items():
        key = amap.get(_norm(k))
        if key is not None and not (len(name_vals) == 1 and _norm(k) in _SCORE_KEYS):
            if isinstance(v, dict):
                inner = [x for kk, x in v.items() if _norm(kk) in _SCORE_KEYS]
                if not inner:
                    found.setdefault(key, []).append(_Bad(v, "an object without a score"))
                for x in inner:
                    found.setdefault(key, []).append(_as_score(x))
            else:
                found.setdefault(key, []).append(_as_score(v))
        elif isinstance(v, (dict, list)):
            _walk(v, amap, found, depth + 1)


def _line_scores(text: str, amap: dict[str, str], found: dict[str, list], scale_max: int) -> None:
    for m in _LINE.finditer(text):
        key = amap.get(_norm(m.group("name")))
        if key is None:
            continue
        rest = m.group("rest")
        raw = m.group("num")
        if _RANGE_REST.match(rest):
            found.setdefault(key, []).append(_Bad(raw + rest.strip()[:12], "a range, not one score"))
            continue
        d = _DENOM_REST.match(rest)
        if d and int(d.group(1)) != scale_max:
            found.setdefault(key, []).append(_Bad(f"{raw}/{d.group(1)}", f"on a scale other than 1-{scale_max}"))
            continue
        found.setdefault(key, []).append(_as_score(float(raw) if "." in raw else int(raw)))
    if "result" in amap:
        for m in _RESULT.finditer(text):
            raw = m.group("num")
            found.setdefault(amap["result"], []).append(_as_score(float(raw) if "." in raw else int(raw)))


def _blank_spans(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    parts, last = [], 0
    for s, e in spans:
        parts.append(text[last:s])
        parts.append("\n" * text.count("\n", s, e))
        last = e
    parts.append(text[last:])
    return "".join(parts)


def parse_scores(
    text: str,
    dimensions: Sequence[str | Dimension],
    scale: tuple[int, int] = (1, 5),
    single_aliases: bool = True,
) -> dict[str, int]:
    """One integer score per dimension, or `JudgeParseError` saying exactly what is wrong.

    `dimensions` are names or keys (matched ignoring case, spaces, `_` and `-`) or `Dimension`s (keyed
    by `.key`). With a single dimension, `score`/`rating`/`[RESULT] n` also count (per-dimension mode).
    """
    if not isinstance(text, str):
        raise JudgeParseError(f"judge output is not text: {type(text).__name__}")
    lo, hi = scale
    amap = _alias_map(dimensions, single_aliases)
    keys = [k for k, _ in _names(dimensions)]
    found: dict[str, list] = {}
    objects = iter_json_objects(text)
    for obj, _, _ in objects:
        _walk(obj, amap, found)
    _line_scores(_blank_spans(text, [(s, e) for _, s, e in objects]), amap, found, hi)
    if not found:
        raise JudgeParseError(f"no scores found for {keys} in: {_clip(text)}")
    problems = []
    scores: dict[str, int] = {}
    for key in keys:
        values = found.get(key)
        if not values:
            problems.append(f"{key}: missing")
            continue
        bad = [v for v in values if isinstance(v, _Bad)]
        if bad:
            problems.append(f"{key}: {bad[0]!r}")
            continue
        distinct = sorted(set(values))
        if len(distinct) > 1:
            problems.append(f"{key}: conflicting scores {distinct}")
            continue
        s = distinct[0]
        if not lo <= s <= hi:
            problems.append(f"{key}: {s} is outside {lo}-{hi}")
            continue
        if str(s) not in text:  # defensive: a score must be readable in the text itself
            problems.append(f"{key}: {s} does not appear literally in the text")
            continue
        scores[key] = s
    if problems:
        raise JudgeParseError("; ".join(problems) + f" (in: {_clip(text)})")
    return scores


def parse_reasons(text: str, dimensions: Sequence[str | Dimension]) -> dict[str, str]:
    """Reasons per dimension where the judge gave them (best effort: reasons are for people, not rewards)."""
    amap = _alias_map(dimensions, single_aliases=True)
    reasons: dict[str, str] = {}

    def take(key: str, value: Any) -> None:
        if isinstance(value, str) and value.strip() and key not in reasons:
            reasons[key] = value.strip()

    def walk(obj: Any, depth: int = 0) -> None:
        if depth > 8:
            return
        if isinstance(obj, list):
            for x in obj:
                walk(x, depth + 1)
            return
        if not isinstance(obj, dict):
            return
        name_vals = [v for k, v in obj.items() if _norm(k) in _NAME_KEYS and isinstance(v, str)]
        if len(name_vals) == 1 and _norm(name_vals[0]) in amap:
            for k, v in obj.items():
                if _norm(k) in _REASON_KEYS:
                    take(amap[_norm(name_vals[0])], v)
        for k, v in obj.items():
            nk = _norm(k)
            if nk in amap and isinstance(v, dict):
                for kk, vv in v.items():
                    if _norm(kk) in _REASON_KEYS:
                        take(amap[nk], vv)
            elif nk in ("reasons", "reasoning", "rationales", "feedback", "explanations") and isinstance(v, dict):
                for kk, vv in v.items():
                    if _norm(kk) in amap:
                        take(amap[_norm(kk)], vv)
            elif isinstance(v, (dict, list)):
                walk(v, depth + 1)

    for obj, _, _ in iter_json_objects(text if isinstance(text, str) else ""):
        walk(obj)
    return reasons


def parse_verdict(text: str, verdicts: Sequence[str]) -> str:
    """Exactly one verdict label from JSON (`"verdict": "PASS"`) or a `Verdict: PASS` line; never guessed."""
    if not isinstance(text, str):
        raise JudgeParseError(f"critic output is not text: {type(text).__name__}")
    labels = {v.upper(): v for v in verdicts}
    found: list[str] = []
    objects = iter_json_objects(text)

    def walk(obj: Any, depth: int = 0) -> None:
        if depth > 8:
            return
        if isinstance(obj, dict):
            for k, v in obj.items():
                if _norm(k) in ("verdict", "decision", "winner", "label") and isinstance(v, str):
                    found.append(v.strip().strip("*").upper())
                elif isinstance(v, (dict, list)):
                    walk(v, depth + 1)
        elif isinstance(obj, list):
            for x in obj:
                walk(x, depth + 1)

    for obj, _, _ in objects:
        walk(obj)
    rest = _blank_spans(text, [(s, e) for _, s, e in objects])
    for m in re.finditer(r"^[ \t#>*-]*\**(?:final[ \t]+)?(?:verdict|winner)\**[ \t]*[:=][ \t]*\**[ \t]*([A-Za-z]+)", rest, re.I | re.M):
        found.append(m.group(1).upper())
    if not found:
        raise JudgeParseError(f"no verdict found (expected one of {list(verdicts)}) in: {_clip(text)}")
    unknown = [v for v in found if v not in labels]
    if unknown:
        raise JudgeParseError(f"unknown verdict {unknown[0]!r} (expected one of {list(verdicts)}) in: {_clip(text)}")
    distinct = sorted(set(found))
    if len(distinct) > 1:
        raise JudgeParseError(f"conflicting verdicts {distinct} in: {_clip(text)}")
    return labels[distinct[0]]


def _clip(text: str, n: int = 160) -> str:
    t = " ".join(str(text).split())
    return repr(t if len(t) <= n else t[: n - 3] + "...")
