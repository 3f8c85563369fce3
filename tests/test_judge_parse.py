"""parse_scores / parse_verdict never guess; rubrics load and validate; aggregation and panels."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kardia.judge import (
    JudgeParseError,
    JudgeResult,
    Panel,
    RubricError,
    aggregate,
    load_rubric,
    parse_reasons,
    parse_scores,
    parse_verdict,
)

DIMS = ["Relevance", "Fluency", "Empathy", "Persona Consistency", "Safety"]


def test_json_plain_fenced_and_with_prose():
    obj = {"relevance": 4, "fluency": 5, "empathy": 3, "persona_consistency": 2, "safety": 5}
    want = dict(zip(DIMS, [4, 5, 3, 2, 5]))
    assert parse_scores(json.dumps(obj), DIMS) == want
    assert parse_scores("Sure.\n```json\n" + json.dumps(obj, indent=2) + "\n```\nHope this helps", DIMS) == want
    nested = {k: {"reason": "because", "score": v} for k, v in obj.items()}
    assert parse_scores("Scores: " + json.dumps(nested), DIMS) == want
    listed = {"scores": [{"dimension": k, "score": v} for k, v in zip(DIMS, [4, 5, 3, 2, 5])]}
    assert parse_scores(json.dumps(listed), DIMS) == want


def test_dimension_lines():
    text = "**Relevance**: 4/5\n- Fluency: 5\nEmpathy score: 3 - warm\n1. Persona Consistency = 2\nSafety: 5 (fine)"
    assert parse_scores(text, DIMS) == dict(zip(DIMS, [4, 5, 3, 2, 5]))


def test_dimension_objects_are_keyed_by_key():
    rubric = load_rubric("kardia")
    text = "\n".join(f"{d.name}: 3" for d in rubric.dimensions)
    assert parse_scores(text, rubric.dimensions) == {k: 3 for k in rubric.keys}


@pytest.mark.parametrize(
    "text, why",
    [
        ("Empathy: 4\nEmpathy: 5", "conflicting"),
        ('{"empathy": 4}\nEmpathy: 2', "conflicting"),
        ("no numbers here", "no scores"),
        ("Empathy: 7", "outside"),
        ("Empathy: 0", "outside"),
        ("Empathy: 4-5", "range"),
        ("Empathy: 4/10", "scale"),
        ('{"empathy": 3.5}', "not an integer"),
        ('{"empathy": true}', "not a number"),
        ('{"empathy": "high"}', "not an integer"),
        ('{"empathy": null}', "not a number"),
        ('{"empathy": {"reason": "nice"}}', "without a score"),
    ],
)
def test_errors_are_never_defaults(text, why):
    with pytest.raises(JudgeParseError, match=why):
        parse_scores(text, ["Empathy"])


def test_missing_dimension_is_named():
    with pytest.raises(JudgeParseError, match="safety: missing"):
        parse_scores('{"relevance": 4, "empathy": 3}', ["relevance", "empathy", "safety"])


def test_single_dimension_aliases():
    assert parse_scores('{"reason": "ok", "score": 4}', ["empathy"]) == {"empathy": 4}
    assert parse_scores("Feedback... [RESULT] 2", ["empathy"]) == {"empathy": 2}
    with pytest.raises(JudgeParseError):  # "score" is not an alias when several dimensions are asked
        parse_scores('{"score": 4}', ["empathy", "safety"])


def test_reasons_and_verdicts():
    text = json.dumps({"empathy": {"score": 4, "reason": "validates the loss"}, "reasons": {"safety": "no risk"}})
    assert parse_reasons(text, ["empathy", "safety"]) == {"empathy": "validates the loss", "safety": "no risk"}
    v = ["FAIL", "PASS", "SOLVED"]
    assert parse_verdict('{"reasons": {}, "verdict": "pass"}', v) == "PASS"
    assert parse_verdict("Reasons...\n**Verdict:** SOLVED", v) == "SOLVED"
    for bad in ("Verdict: PASS\nVerdict: FAIL", "I think it passes", "Verdict: MAYBE", ""):
        with pytest.raises(JudgeParseError):
            parse_verdict(bad, v)


# -- property tests ------------------------------------------------------------------------------
_fragments = st.sampled_from(
    ["Empathy", "Relevance", "Safety", "empathy", ":", " ", "\n", "{", "}", '"', ",", "4", "5", "1", "0", "9", "3.5",
     '"empathy": ', '"score": ', "/5", "-", "**", "```json\n", "```", "[RESULT] ", "null", "true", "\\u0034"]
)
_texts = st.one_of(st.text(max_size=300), st.lists(_fragments, max_size=40).map("".join))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_texts)
def test_parse_scores_never_crashes_and_never_invents(text):
    dims = ["Empathy", "Relevance"]
    try:
        scores = parse_scores(text, dims)
    except JudgeParseError:
        return
    assert set(scores) == set(dims)
    for value in scores.values():
        assert isinstance(value, int) and 1 <= value <= 5
        assert str(value) in text  # never a score that is not in the text


@settings(max_examples=200, deadline=None)
@given(_texts)
def test_parse_verdict_never_crashes(text):
    try:
        v = parse_verdict(text, ["FAIL", "PASS", "SOLVED"])
    except JudgeParseError:
        return
    assert v.lower() in text.lower()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["relevance", "empathy", "safety"]), st.integers(-3, 9), min_size=3))
def test_json_roundtrip_or_error(obj):
    text = json.dumps(obj)
    if all(1 <= v <= 5 for v in obj.values()):
        assert parse_scores(text, list(obj)) == obj
    else:
        with pytest.raises(JudgeParseError):
            parse_scores(text, list(obj))


# -- rubrics and aggregation ---------------------------------------------------------------------
def test_shipped_rubrics():
    k = load_rubric("kardia")
    assert [d.name for d in k.dimensions] == DIMS
    assert all({1, 3, 5} <= set(d.anchors) for d in k.dimensions)
    assert k.dimension("Safety").veto == 2
    c = load_rubric("critic")
    assert c.kind == "verdict" and list(c.verdicts) == ["FAIL", "PASS", "SOLVED"]


def test_user_rubric_file_and_errors(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\ndimensions:\n  - name: Warmth\n    definition: is it warm\n    anchors: {1: cold, 5: warm}\n    weight: 2\n")
    r = load_rubric(good)
    assert r.keys == ["warmth"] and r.dimensions[0].weight == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndimensions:\n  - name: Warmth\n    definition: x\n    anchors: {9: nope}\n")
    with pytest.raises(RubricError, match=r"bad.yaml: .*anchor 9 outside"):
        load_rubric(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\ndimensions:\n  - name: Warmth\n    weight: -1\n    definition: x\n")
    with pytest.raises(RubricError, match=r"typo.yaml: field dimensions.0.weight"):
        load_rubric(typo)
    with pytest.raises(RubricError, match="no shipped rubric"):
        load_rubric("does-not-exist")
    # an unquoted comma in a YAML flow mapping splits a definition into a stray key: an error, not "short"
    comma = tmp_path / "comma.yaml"
    comma.write_text("name: c\ndimensions:\n  - {name: Response, definition: short, warm and specific.}\n")
    with pytest.raises(RubricError, match=r"comma.yaml: .*warm and specific"):
        load_rubric(comma)


def test_every_shipped_rubric_definition_is_whole():
    for name in ("kardia", "critic", "critic_compact"):
        for d in load_rubric(name).dimensions:
            assert len(d.definition.split()) >= 4, (name, d.name, d.definition)


def test_aggregate_weights_and_veto():
    r = load_rubric("kardia")
    full = {k: 5.0 for k in r.keys}
    assert aggregate(full, r) == (1.0, [])
    assert aggregate({k: 1.0 for k in r.keys}, r)[0] == 0.0
    mid = {**full, "empathy": 3.0}
    assert aggregate(mid, r)[0] == pytest.approx((4 + 0.5) / 5)
    assert aggregate({**full, "safety": 2.0}, r) == (0.0, ["safety"])
    heavy = r.model_copy(update={"dimensions": [d.model_copy(update={"weight": 3.0 if d.key == "empathy" else 1.0}) for d in r.dimensions]})
    assert aggregate(mid, heavy)[0] == pytest.approx((4 + 3 * 0.5) / 7)


class _Fixed:
    def __init__(self, result):
        self.result = result
        self.rubric = load_rubric("kardia")

    async def ascore(self, item):
        return self.result


def _res(**scores):
    r = load_rubric("kardia")
    s = {k: 4.0 for k in r.keys} | scores
    return JudgeResult(scores=s, reward=aggregate(s, r)[0])


def test_panel_methods_and_agreement():
    results = [_res(empathy=5.0), _res(empathy=5.0), _res(empathy=2.0)]
    for method, want in (("mean", 4.0), ("median", 5.0), ("majority", 5.0)):
        combined = Panel([_Fixed(r) for r in results], method=method).combine(results)
        assert combined.scores["empathy"] == pytest.approx(want)
        assert combined.agreement["n_valid"] == 3
    maj = Panel([_Fixed(r) for r in results], method="majority").combine(results)
    assert maj.agreement["per_dimension"]["empathy"]["agreement"] == pytest.approx(2 / 3)
    assert maj.agreement["per_dimension"]["relevance"]["agreement"] == 1.0
    tie = [_res(empathy=5.0), _res(empathy=2.0)]
    assert "no majority" in Panel([_Fixed(r) for r in tie], method="majority").combine(tie).error
    failed = [JudgeResult(error="parse: x"), JudgeResult(error="llm: y"), _res()]
    out = Panel([_Fixed(r) for r in failed]).combine(failed)
    assert out.scores is None and out.reward is None and "only 1 of 3" in out.error


def test_error_kind_round_trips_and_old_records_are_read_from_their_prefix():
    """Readers branch on `error_kind`; records written before the field get it from the old message prefix."""
    from kardia.eval.metrics import _failure_kind
    from kardia.judge.core import legacy_error_kind, result_record

    for kind in ("call", "parse"):
        r = JudgeResult(error="anything at all", error_kind=kind)
        back = JudgeResult.model_validate_json(r.model_dump_json())
        assert back.error_kind == kind
        assert result_record("x", r)["error_kind"] == kind
        assert _failure_kind({"error": "anything at all", "error_kind": kind}) == kind
    # written before the field existed: judge "llm: ..." / "parse: ...", pairwise "LLMError: ..." / "JudgeParseError: ..."
    assert [legacy_error_kind(e) for e in ("llm: timeout", "LLMError: down", "parse: no JSON", "JudgeParseError: x", None)] == [
        "call", "call", "parse", "parse", None]
    assert _failure_kind({"error": "parse: no JSON"}) == "parse" and _failure_kind({"error": "llm: 500"}) == "call"
    assert _failure_kind({"error": None, "scores": None}) == "no scores"
    # the field wins over the message
    assert _failure_kind({"error": "llm: looks like a call", "error_kind": "parse"}) == "parse"
