"""The real thing end to end: the embedded model answers and the embedded model judges, on real ED turns.

Slow (loads torch): run it under the CPU lock, e.g.
`flock /tmp/kardia-cpu.lock python -m pytest -q tests/test_eval_embedded.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_embedded_model_and_judge_on_ed_turns(tmp_path, shared_data, embedded_path, monkeypatch):
    from kardia.eval.run import EvalConfig, run_eval

    monkeypatch.setenv("KARDIA_HOME", str(tmp_path / "home"))
    cfg = EvalConfig(model="embedded", judge="embedded", judge_scorer="probs", mode="plain", limit=4,
                     data=str(shared_data / "empatheticdialogues/ed_valid_utterances_kaggle.csv"),
                     out=str(tmp_path / "emb"), plain_max_tokens=40, n_boot=200, cache=False,
                     safety=_has_safety())
    summary = run_eval(cfg, progress=False)
    assert summary["failures"] == [] and summary["scored_now"] == 4
    recs = [json.loads(l) for l in (Path(cfg.out) / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["response"].strip() for r in recs)
    assert all(r["emotion_output"] is not None for r in recs)
    m = json.loads((Path(cfg.out) / "metrics.json").read_text())
    for d in m["dims"]:
        vals = [r["judge"]["scores"][d] for r in recs if r["judge"]["scores"]]
        assert all(1.0 <= v <= 5.0 for v in vals)
        assert m["criteria"][d]["value"] == pytest.approx(sum(vals) / len(vals))
    gold = [r for r in recs if r["gold_emotion"]]
    acc = sum(r["pred_emotion"] == r["gold_emotion"] for r in gold) / len(gold)
    assert m["criteria"]["emotion_accuracy"]["value"] == pytest.approx(acc)
    assert len(m["dims"]) == 5
    assert (Path(cfg.out) / "report.html").exists() and (Path(cfg.out) / "radar.png").exists()


def _has_safety() -> bool:
    try:
        import kardia.safety  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def test_plain_mode_emotion_read_by_probabilities(tmp_path, shared_data, embedded_path, monkeypatch):
    """`emotion_reader=probs`: every turn gets one of the 32 labels, read from the model's own probabilities."""
    from kardia.emotions import LABELS
    from kardia.eval.run import EvalConfig, run_eval

    monkeypatch.setenv("KARDIA_HOME", str(tmp_path / "home"))
    cfg = EvalConfig(model="embedded", judge="none", mode="plain", emotion_reader="probs", limit=3,
                     data=str(shared_data / "empatheticdialogues/ed_valid_utterances_kaggle.csv"),
                     out=str(tmp_path / "probs"), plain_max_tokens=8, n_boot=100, cache=False, safety=False)
    summary = run_eval(cfg, progress=False)
    assert summary["failures"] == [] and summary["scored_now"] == 3
    recs = [json.loads(l) for l in (Path(cfg.out) / "results.jsonl").read_text().splitlines()]
    assert all(r["pred_emotion"] in LABELS and r["emotion_parse"] == "probs" for r in recs)
    assert all("(p=" in r["emotion_output"] for r in recs)
    m = json.loads((Path(cfg.out) / "metrics.json").read_text())
    assert m["criteria"]["emotion_named"]["value"] == 1.0 and m["emotion_parse"] == {"probs": 3}
    assert "most probable of the 32 labels" in (Path(cfg.out) / "report.md").read_text()
