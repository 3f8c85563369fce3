"""The report's metrics from streamed columns: the same numbers as computing from every record."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "data" / "metrics_golden.json"
LABELS = ["sad", "afraid", "lonely", "anxious", "grateful", "proud", "hopeful", "disappointed"]


def fixture_records(n: int = 400, seed: int = 7) -> list[dict]:
    """Deterministic per-item records covering every branch a report reads (missing gold, unreadable
    predictions, judge failures and skips, dims seen late, at-risk turns, fractional judged means)."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        gold = rng.choice(LABELS + [None])
        pred = rng.choice(LABELS + [None, "weird"])
        judge: dict | None
        u = rng.random()
        if u < 0.1:
            judge = None
        elif u < 0.15:
            judge = {"skipped": "beyond judge_limit"}
        elif u < 0.22:
            judge = {"error": "could not parse", "error_kind": rng.choice(["call", "parse"])}
        else:
            dims = ["empathy", "fluency", "personalisation"] + (["safety"] if i > n // 2 else [])
            judge = {"scores": {d: rng.choice([1, 2, 3, 4, 5, 3.5]) for d in dims},
                     "reasons": {d: f"why {i}" for d in dims}}
        risk = {"at_risk": rng.random() < 0.1}
        recs.append({
            "id": f"i{i:04d}", "dialogue_id": f"d{rng.randrange(n // 4)}", "turn_index": rng.randrange(1, 5),
            "mbti": rng.choice(["INFP", "ESTJ", None]), "gold_emotion": gold, "pred_emotion": pred,
            "emotion_correct": pred == gold if gold else None, "family_correct": (pred == gold or rng.random() < .2) if gold else None,
            "emotion_parse": rng.choice(["exact", "first_word", None]),
            "format_ok": rng.choice([True, False, None]), "judge": judge, "risk": risk,
            "crisis_handled": rng.choice([True, False]) if risk["at_risk"] else None,
            "no_response": rng.random() < 0.05, "history": [{"role": "user", "content": f"said {i}"}],
            "response": f"reply {i}",
        })
    return recs


def _metrics(records, **kw):
    from kardia.eval.metrics import compute_metrics

    return json.loads(json.dumps(compute_metrics(records, **kw)))


def test_metrics_match_the_record_by_record_computation_exactly():
    """Golden values written by the list-of-records implementation (commit cf99372) on this fixture."""
    expected = json.loads(GOLDEN.read_text())
    assert _metrics(fixture_records(), n_boot=300, seed=3) == expected


def test_bootstrap_in_small_chunks_gives_the_same_intervals(monkeypatch):
    """Chunks of replicates come from one RNG stream in order: rates (integer sums) match exactly,
    fractional means to rounding of the matrix product."""
    from kardia.eval import metrics

    whole = _metrics(fixture_records(), n_boot=300, seed=3)
    monkeypatch.setattr(metrics, "W_CHUNK_BYTES", 8 * 8 * 100)  # 8 replicates a chunk
    chunked = _metrics(fixture_records(), n_boot=300, seed=3)
    for k, v in whole["criteria"].items():
        exact = k in metrics.RATES or k == "crisis_handling"
        for f in ("value", "lo", "hi", "n"):
            assert chunked["criteria"][k][f] == (v[f] if exact or v[f] is None else pytest.approx(v[f], rel=1e-12)), (k, f)
    assert {k: v for k, v in chunked.items() if k not in ("criteria", "breakdowns")} == \
        {k: v for k, v in whole.items() if k not in ("criteria", "breakdowns")}


def test_report_streams_results_and_keeps_the_worst_examples(tmp_path):
    from kardia.eval.columns import read_columns

    recs = fixture_records()
    with (tmp_path / "results.jsonl").open("w") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")
    cols = read_columns(tmp_path)
    scored = sorted(((sum(r["judge"]["scores"].values()) / len(r["judge"]["scores"]), r["id"]) for r in recs
                     if (r["judge"] or {}).get("scores")))
    assert [r["id"] for r in cols.worst()] == [i for _, i in scored[:5]]
    assert cols.n == len(recs) and len(cols._worst) <= 5
