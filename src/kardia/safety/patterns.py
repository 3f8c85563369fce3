"""High-precision crisis patterns: rules are data (`resources/safety/patterns.yaml`), this is the engine.

Why layered filters and not a keyword list: the words of a crisis ("die", "kill", "cut") fill ordinary
talk ("I'm dying of laughter", "this commute is killing me", "my friend once said she wanted to die").
So the text is normalised (contractions, slang, misspellings), quotations by others and idioms are cut
out, and each first-person rule match is dropped when negated, inside fiction/songs/games, after a third
party's reported speech, or next to a rule's suppressor (a trivial cause, a joke marker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import yaml

from ..paths import resource_path
from .types import CATEGORIES, LEVELS


class PatternFileError(ValueError):
    """A pattern file that cannot be used, naming file and rule."""


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    level: str
    regex: re.Pattern
    negatable: bool = True
    reported_ok: bool = False
    requires: tuple[str, ...] = ()
    requires_any: tuple[str, ...] = ()
    suppress: tuple[str, ...] = ()
    boost: str | None = None


@dataclass(frozen=True)
class Match:
    rule: str
    category: str
    level: str
    text: str  # the matched words (normalised)


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance (transpositions count 1), cut off above `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] | None = None
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if prev2 is not None and i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


_CONTRACTIONS = [
    (r"\bcan't\b", "cannot"),
    (r"\bwon't\b", "will not"),
    (r"\bain't\b", "is not"),
    (r"\bshan't\b", "shall not"),
    (r"n't\b", " not"),
    (r"'m\b", " am"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"'d\b", " would"),
    (r"'s got\b", " has got"),
    (r"\b(he|she|it|that|what|there|here|who|where|everything|nothing|life|everyone|this|someone|somebody)'s\b", r"\1 is"),
]


class PatternSet:
    """A loaded pattern file. `find(text)` returns the rule matches that survive every filter."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PatternFileError(f"{self.path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict) or "rules" not in data:
            raise PatternFileError(f"{self.path}: expected a mapping with a 'rules' list")
        self.macros: dict[str, str] = dict(data.get("macros") or {})
        self.named = {k: self._compile(v, f"named.{k}") for k, v in (data.get("named") or {}).items()}
        self.suppressors = {k: self._compile(v, f"suppressors.{k}") for k, v in (data.get("suppressors") or {}).items()}
        repl = {str(k): str(v) for k, v in (data.get("replacements") or {}).items()}
        keys = sorted(repl, key=len, reverse=True)
        self._repl = repl
        self._repl_re = re.compile(r"(?<![\w'])(" + "|".join(re.escape(k) for k in keys) + r")(?![\w'])") if keys else None
        self.fuzzy = [str(w) for w in data.get("fuzzy_keywords") or []]
        self.ing_verbs = {str(w) for w in data.get("ing_verbs") or []}
        self.idioms = [self._compile(p, f"idioms[{i}]") for i, p in enumerate(data.get("idioms") or [])]
        self.fiction = self._compile(data.get("fiction_markers", r"(?!x)x"), "fiction_markers")
        self.reported = self._compile(data.get("reported_speech", r"(?!x)x"), "reported_speech")
        self.own_quote = self._compile(data.get("own_quote", r"(?!x)x"), "own_quote")
        self.negation = self._compile(data.get("negation", r"(?!x)x"), "negation")
        self.negation_window = int(data.get("negation_window", 5))
        self.negation_neutral = self._compile(data.get("negation_neutral", r"(?!x)x"), "negation_neutral")
        self.risk_question = self._compile(data.get("risk_question", r"(?!x)x"), "risk_question")
        self.affirmative = self._compile(data.get("affirmative", r"(?!x)x"), "affirmative")
        self.denial = self._compile(data.get("denial", r"(?!x)x"), "denial")
        self.escalation = self._compile(data.get("escalation", r"(?!x)x"), "escalation")
        self.rules = [self._rule(i, r) for i, r in enumerate(data["rules"])]

    # -- loading -------------------------------------------------------------------------------
    def _expand(self, pattern: str) -> str:
        for _ in range(5):  # macros may use macros
            new = re.sub(r"<<(\w+)>>", lambda m: self.macros.get(m.group(1), m.group(0)), pattern)
            if new == pattern:
                break
            pattern = new
        if "<<" in pattern:
            raise PatternFileError(f"{self.path}: unknown macro in {pattern[:80]!r}")
        return pattern

    def _compile(self, pattern: str, where: str) -> re.Pattern:
        try:
            return re.compile(self._expand(str(pattern)))
        except re.error as exc:
            raise PatternFileError(f"{self.path}: {where}: bad regular expression: {exc}") from None

    def _rule(self, i: int, r: dict) -> Rule:
        rid = r.get("id") or f"rules[{i}]"
        for field in ("category", "level", "pattern"):
            if field not in r:
                raise PatternFileError(f"{self.path}: rule {rid}: field {field} is missing")
        if r["category"] not in CATEGORIES:
            raise PatternFileError(f"{self.path}: rule {rid}: field category: {r['category']!r} not in {CATEGORIES}")
        if r["level"] not in LEVELS[1:]:
            raise PatternFileError(f"{self.path}: rule {rid}: field level: {r['level']!r} not in {LEVELS[1:]}")
        for field in ("requires", "requires_any"):
            for name in r.get(field, []):
                if name not in self.named:
                    raise PatternFileError(f"{self.path}: rule {rid}: field {field}: no named regex {name!r}")
        for name in r.get("suppress", []):
            if name not in self.suppressors:
                raise PatternFileError(f"{self.path}: rule {rid}: field suppress: no suppressor {name!r}")
        if r.get("boost") and r["boost"] not in self.named:
            raise PatternFileError(f"{self.path}: rule {rid}: field boost: no named regex {r['boost']!r}")
        return Rule(
            id=rid,
            category=r["category"],
            level=r["level"],
            regex=self._compile(r["pattern"], f"rule {rid}"),
            negatable=bool(r.get("negatable", True)),
            reported_ok=bool(r.get("reported_ok", False)),
            requires=tuple(r.get("requires", [])),
            requires_any=tuple(r.get("requires_any", [])),
            suppress=tuple(r.get("suppress", [])),
            boost=r.get("boost"),
        )

    # -- text preparation ------------------------------------------------------------------------
    def normalise(self, text: str) -> str:
        """Lower case, plain quotes, expanded contractions, slang and misspellings corrected."""
        t = str(text).lower()
        t = t.translate(str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ", "\u2013": " - "}))
        t = re.sub(r"\bself[\s-]*harm", "selfharm", t)
        t = re.sub(r"\b(my|him|her|your|them) self\b", r"\1self", t)
        for pat, rep in _CONTRACTIONS:
            t = re.sub(pat, rep, t)
        if self._repl_re is not None:
            t = self._repl_re.sub(lambda m: self._repl[m.group(1)], t)
        t = re.sub(r"[a-z]+", self._fix_word, t)
        t = re.sub(r"\b(my|him|her|your|them) self\b", r"\1self", t)
        return re.sub(r"[ \t]+", " ", t).strip()

    def _fix_word(self, m: re.Match) -> str:
        w = m.group(0)
        if w.endswith("in") and w + "g" in self.ing_verbs:
            return w + "g"
        if len(w) >= 5 and w not in self.fuzzy:
            best: tuple[int, int, str] | None = None
            for k in self.fuzzy:
                limit = 1 if len(k) < 8 else 2
                if k[0] == w[0]:
                    d = _edit_distance(w, k, limit)
                    if d <= limit and (best is None or (d, abs(len(k) - len(w))) < best[:2]):
                        best = (d, abs(len(k) - len(w)), k)
            if best is not None:
                return best[2]
        return w

    def _strip_quotes(self, t: str) -> str:
        """Drop others' quoted words; keep quotes the user attributes to themselves."""

        def repl(m: re.Match) -> str:
            before = t[max(0, m.start() - 60) : m.start()]
            if self.own_quote.search(before):
                return " " + m.group(1) + " "
            return " [quote] "

        t = re.sub(r'"([^"]{1,400})"', repl, t)
        return re.sub(r"(?<![a-z0-9])'([^']{1,400})'(?![a-z0-9])", repl, t)

    def _strip_idioms(self, t: str) -> str:
        for rx in self.idioms:
            t = rx.sub(" ~ ", t)
        return t

    def clean(self, text: str) -> str:
        """Normalised, with others' quoted words and idioms cut out: what the learned layer embeds."""
        return re.sub(r"\s+", " ", self._strip_idioms(self._strip_quotes(self.normalise(text)))).strip()

    def clauses(self, normalised: str) -> list[str]:
        t = self._strip_idioms(self._strip_quotes(normalised))
        parts = re.split(r"[.!?;\n]+|\s(?:but|though|although|however)\s", t)
        return [p.strip(" ,") for p in parts if p.strip(" ,~")]

    # -- matching -----------------------------------------------------------------------------------
    def _negated(self, clause: str, start: int) -> bool:
        prefix = self.negation_neutral.sub(" ", clause[:start])
        words = prefix.split()[-self.negation_window :]
        return bool(self.negation.search(" ".join(words)))

    def find(self, text: str) -> list[Match]:
        norm = self.normalise(text)
        found: list[Match] = []
        for clause in self.clauses(norm):
            fiction = bool(self.fiction.search(clause))
            for rule in self.rules:
                for m in rule.regex.finditer(clause):
                    if fiction:
                        break
                    if rule.negatable and self._negated(clause, m.start()):
                        continue
                    if not rule.reported_ok and self.reported.search(clause[: m.start()]):
                        continue
                    if any(self.suppressors[s].search(clause) for s in rule.suppress):
                        continue
                    if rule.requires and not all(self.named[n].search(norm) for n in rule.requires):
                        continue
                    if rule.requires_any and not any(self.named[n].search(norm) for n in rule.requires_any):
                        continue
                    level = rule.level
                    if rule.boost and self.named[rule.boost].search(norm):
                        level = "high"
                    found.append(Match(rule.id, rule.category, level, m.group(0).strip()))
                    break  # one match per rule per clause is enough evidence
        return found

    # -- conversation context -------------------------------------------------------------------
    def is_risk_question(self, assistant_text: str) -> bool:
        return bool(self.risk_question.search(self.normalise(assistant_text)))

    def is_affirmative(self, text: str) -> bool:
        t = self.normalise(text)
        return bool(self.affirmative.search(t)) and not self.denial.search(t)

    def is_escalation(self, text: str) -> bool:
        return bool(self.escalation.search(self.normalise(text)))


@lru_cache(maxsize=8)
def load_patterns(path: str | None = None) -> PatternSet:
    """The shipped pattern file, or another one (operators may extend the rules)."""
    return PatternSet(path or resource_path("safety", "patterns.yaml"))


def find(text: str, path: str | None = None) -> list[Match]:
    return load_patterns(path).find(text)


def iter_rule_ids(path: str | None = None) -> Iterable[str]:
    return (r.id for r in load_patterns(path).rules)
