"""The guard's vocabulary: risk categories, levels, and the assessment every layer returns."""

from __future__ import annotations

from pydantic import BaseModel, Field

CATEGORIES: tuple[str, ...] = ("self_harm", "harm_to_others", "being_harmed", "medical_emergency")
LEVELS: tuple[str, ...] = ("none", "low", "medium", "high")
# When two categories tie on level, the one listed first names the assessment (the most urgent help).
CATEGORY_PRIORITY: tuple[str, ...] = ("medical_emergency", "self_harm", "being_harmed", "harm_to_others")


def level_rank(level: str) -> int:
    return LEVELS.index(level)


class RiskAssessment(BaseModel):
    """What the guard found in one user turn (with its recent history).

    `evidence` holds short human-readable reasons (rule id and the matched words); it contains
    words from the message, so loggers leave it out unless the operator enables text logging.
    `errors` records a layer that failed (e.g. an unparseable model check): never silently dropped.
    """

    category: str | None = None
    level: str = "none"
    evidence: list[str] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)
    source: str = "patterns"  # patterns | context | learned | semantic | model, joined with + when several fired
    errors: list[str] = Field(default_factory=list)

    @property
    def at_risk(self) -> bool:
        return self.category is not None and self.level != "none"

    @classmethod
    def none(cls, errors: list[str] | None = None) -> "RiskAssessment":
        return cls(errors=list(errors or []))
