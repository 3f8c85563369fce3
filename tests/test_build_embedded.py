"""`kardia build` on the real embedded model (SmolLM2-135M-Instruct): PersonaChat profiles x
EmpatheticDialogues situations, 2 exchanges each. Run under the CPU lock:
    flock /tmp/kardia-cpu.lock python -m pytest -q tests/test_build_embedded.py
"""

from __future__ import annotations

import json

import pytest

from kardia.data.config import BuildConfig
from kardia.data.engine import run_build
from kardia.dataset import DialogueRecord
from kardia.spans import parse

pytestmark = pytest.mark.slow


def test_embedded_build_end_to_end(shared_data, embedded_path, tmp_path):
    cfg = BuildConfig.model_validate(
        {
            "profiles": [{"kind": "personachat", "path": str(shared_data / "personachat" / "personachat_valid_self_original_no_cands.txt"), "limit": 2}],
            "seeds": [{"kind": "ed", "path": str(shared_data / "empatheticdialogues" / "ed_situations_valid.csv"), "limit": 200}],
            "dialogues_per_profile": 1,
            "models": {"user": "embedded", "responder": "embedded", "critic": "embedded"},
            "critic_scorer": "probs",
            "max_exchanges": 2,
            "max_revisions": 1,
            "sampling": {"temperature": 0.0, "span_max_tokens": 32, "response_max_tokens": 32, "user_max_tokens": 32},
            "llm_cache": False,
            "concurrency": 2,
            "split": {"test_fraction": 0.5},
            "filters": {"emotion_jumps": False, "identity_drift": False},  # keep both dialogues to check them
            "dedup": {"method": "none"},
            "export": {"hf": False, "plot": False},
        }
    )
    res = run_build(cfg, tmp_path, progress=False)
    assert res["generation"]["written"] == 2 and res["generation"]["failed"] == 0
    lines = (tmp_path / "work" / "generated.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line in lines:  # every generated dialogue, before any filter
        rec = DialogueRecord.model_validate(json.loads(line)["record"])
        turns = rec.assistant_turns()
        assert 1 <= len(turns) <= 2
        for _, content in turns:
            p = parse(content)
            assert p.ok, (p.problems, content)
            assert p.response.strip() and p.understanding.strip() and p.reasoning.strip()
        assert rec.meta.models == {"user": "embedded", "responder": "embedded", "critic": "embedded"}
        assert sum(rec.meta.verdict_counts.values()) >= len(turns)
    kept = [json.loads(x) for x in (tmp_path / "dialogues.jsonl").read_text().splitlines()]
    for r in kept:
        DialogueRecord.model_validate(r)
    assert res["dataset"]["kept"] == len(kept)


def test_embedding_dedup_with_packaged_sentence_model():
    from kardia.data.dedup import NearDupIndex

    idx = NearDupIndex("embeddings")
    assert idx.check_and_add("a", "I lost my job today and I'm scared to tell my wife.") is None
    assert idx.check_and_add("b", "I lost my job today and I am scared to tell my wife.") == "a"
    assert idx.check_and_add("c", "Our team won the regional chess final this weekend!") is None
