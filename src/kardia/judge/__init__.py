"""Rubric-as-judge: rubrics as data, isolating prompts, strict parsing, aggregation, panels, critic."""

from .core import Judge, JudgeItem, JudgeResult, Panel, aggregate, result_record
from .critic import Critic, Critique
from .isolate import neutralise
from .parse import JudgeParseError, parse_reasons, parse_scores, parse_verdict
from .rubric import Dimension, Rubric, RubricError, load_rubric

__all__ = [
    "Critic",
    "Critique",
    "Dimension",
    "Judge",
    "JudgeItem",
    "JudgeParseError",
    "JudgeResult",
    "Panel",
    "Rubric",
    "RubricError",
    "aggregate",
    "load_rubric",
    "neutralise",
    "parse_reasons",
    "parse_scores",
    "parse_verdict",
    "result_record",
]
