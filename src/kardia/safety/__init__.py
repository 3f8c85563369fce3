"""The crisis guard: find risk in a user's turn, answer it safely, judge how a reply handled it.

Layers: high-precision patterns (negation, quotation, third parties, idioms) -> conversation context ->
an optional model check for indirect statements. Used by chat and serve (Guard), by build as a filter
and by eval as a metric (handles_crisis).
"""

from .assess import aassess, assess, assess_patterns
from .guard import Guard
from .model_check import ModelCheckError, parse_verdict
from .patterns import PatternFileError, load_patterns
from .policy import (
    CrisisResponseCheck,
    Locale,
    LocaleError,
    check_crisis_response,
    contains_method_content,
    crisis_reply,
    handles_crisis,
    load_locale,
    unsafe_output_reply,
)
from .types import CATEGORIES, LEVELS, RiskAssessment

__all__ = [
    "CATEGORIES",
    "LEVELS",
    "CrisisResponseCheck",
    "Guard",
    "Locale",
    "LocaleError",
    "ModelCheckError",
    "PatternFileError",
    "RiskAssessment",
    "aassess",
    "assess",
    "assess_patterns",
    "check_crisis_response",
    "contains_method_content",
    "crisis_reply",
    "handles_crisis",
    "load_locale",
    "load_patterns",
    "parse_verdict",
    "unsafe_output_reply",
]
