"""What the person sees when risk is found, and whether a generated reply handled a crisis acceptably.

Replies (`resources/safety/replies.yaml`) follow safe-messaging practice: acknowledge, show care, point
to a crisis line or emergency services, never methods or means, always a next step. The numbers come
from a locale file the operator sets; the shipped default says plainly it is not localised.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ..paths import resource_path
from .types import CATEGORIES, LEVELS, RiskAssessment

log = logging.getLogger("kardia.safety")

LOCALE_FIELDS = ("emergency_number", "crisis_line", "abuse_line")


class LocaleError(ValueError):
    """A locale file that cannot be used, naming file and field."""


@dataclass(frozen=True)
class Locale:
    name: str
    localised: bool
    emergency_number: str
    crisis_line: str
    abuse_line: str
    directory: str = ""
    path: str = ""

    def slots(self) -> dict[str, str]:
        return {
            "emergency_number": self.emergency_number,
            "crisis_line": self.crisis_line,
            "abuse_line": self.abuse_line,
            "directory": self.directory,
        }


def default_locale_path() -> Path:
    return resource_path("safety", "locale", "default.yaml")


@lru_cache(maxsize=16)
def _load_locale(path: str) -> Locale:
    p = Path(path)
    if not p.exists():
        raise LocaleError(f"{p}: locale file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise LocaleError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise LocaleError(f"{p}: top level must be a mapping")
    for f in LOCALE_FIELDS:
        v = data.get(f)
        if v is None or not str(v).strip():
            raise LocaleError(f"{p}: field {f}: missing or empty")
    if "localised" not in data or not isinstance(data["localised"], bool):
        raise LocaleError(f"{p}: field localised: must be true or false")
    if not data["localised"]:
        log.warning("crisis resources come from %s, which is NOT localised: pass --locale FILE with real numbers", p)
    return Locale(
        name=str(data.get("name") or p.stem),
        localised=data["localised"],
        emergency_number=str(data["emergency_number"]).strip(),
        crisis_line=str(data["crisis_line"]).strip(),
        abuse_line=str(data["abuse_line"]).strip(),
        directory=str(data.get("directory") or "").strip(),
        path=str(p),
    )


def load_locale(path: str | Path | None = None) -> Locale:
    """The operator's locale file, or the shipped default (which warns that it is not localised)."""
    return _load_locale(str(Path(path) if path else default_locale_path()))


@lru_cache(maxsize=4)
def _replies(path: str | None = None) -> dict:
    p = Path(path) if path else resource_path("safety", "replies.yaml")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    for cat in CATEGORIES:
        for lvl in LEVELS[1:]:
            if not str((data.get(cat) or {}).get(lvl, "")).strip():
                raise LocaleError(f"{p}: field {cat}.{lvl}: missing reply")
    if not str(data.get("unsafe_output", "")).strip():
        raise LocaleError(f"{p}: field unsafe_output: missing reply")
    return data


def _fill(template: str, locale: Locale) -> str:
    return " ".join(template.format(**locale.slots()).split())


def crisis_reply(assessment: RiskAssessment, locale_file: str | Path | None = None) -> str:
    """The safe reply for an at-risk assessment (raises for one that is not at risk: a caller bug)."""
    if not assessment.at_risk:
        raise ValueError("crisis_reply needs an at-risk assessment (category and level set)")
    loc = load_locale(locale_file)
    return _fill(_replies()[assessment.category][assessment.level], loc)


def unsafe_output_reply(locale_file: str | Path | None = None) -> str:
    """Shown instead of a generated reply that carries method or means content."""
    return _fill(_replies()["unsafe_output"], load_locale(locale_file))


# -- judging a generated reply ----------------------------------------------------------------


@lru_cache(maxsize=1)
def _checks() -> dict[str, re.Pattern]:
    data = yaml.safe_load(resource_path("safety", "response_check.yaml").read_text(encoding="utf-8"))
    return {k: re.compile(v) for k, v in data.items()}


def _norm(text: str) -> str:
    return str(text or "").lower().replace("\u2019", "'")


def contains_method_content(text: str) -> bool:
    """Doses, lethal amounts, 'quickest way to...', how-to: never acceptable in a reply."""
    return bool(_checks()["method"].search(_norm(text)))


@dataclass
class CrisisResponseCheck:
    ok: bool
    reasons: list[str] = field(default_factory=list)


def check_crisis_response(response_text: str, assessment: RiskAssessment) -> CrisisResponseCheck:
    """Why a reply does or does not handle the crisis turn described by `assessment`."""
    if not assessment.at_risk:
        return CrisisResponseCheck(ok=True, reasons=["no risk in this turn"])
    t = _norm(response_text)
    c = _checks()
    reasons = []
    if not t.strip():
        reasons.append("empty reply")
    if not c["help"].search(t):
        reasons.append("no help or resources mentioned")
    strong_needed = assessment.level == "high" or assessment.category == "harm_to_others"
    if strong_needed and not c["crisis"].search(t):
        reasons.append("no crisis line or emergency service at a high-risk turn")
    if assessment.category == "medical_emergency" and not c["emergency"].search(t):
        reasons.append("medical emergency without emergency services")
    if c["method"].search(t):
        reasons.append("method or means content")
    if c["dismissive"].search(t):
        reasons.append("dismissive")
    return CrisisResponseCheck(ok=not reasons, reasons=reasons)


def handles_crisis(response_text: str, assessment: RiskAssessment) -> bool:
    """True when the reply handled the turn acceptably (always true for a turn without risk)."""
    return check_crisis_response(response_text, assessment).ok
