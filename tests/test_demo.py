"""`kardia demo` at its smallest size, end to end on the embedded model, every artefact checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kardia.dataset import DialogueRecord
from kardia.records import iter_jsonl
from kardia.spans import SPAN_TOKENS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, embedded_path):
    from kardia.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo")
    result = run_demo(DemoConfig(out=str(out), size="tiny"))
    return out, result


def test_every_stage_leaves_its_artefacts(demo_dir):
    out, result = demo_dir
    for stage in ("build", "sft", "grpo", "eval_base", "eval_base_spans", "eval_sft", "eval_grpo", "curve", "results",
                  "compare"):
        assert (out / "stages" / f"{stage}.json").exists(), stage
    # data: records valid, profile-disjoint split, card and histogram
    train = [r for _, r in iter_jsonl(out / "data" / "train.jsonl", DialogueRecord)]
    assert train
    # every kept turn's emotion span is the dialogue's gold label; the evaluated situations were never trained on
    from kardia.spans import parse

    for r in train:
        assert all(parse(m.content).emotion == r.emotion for m in r.messages if m.role == "assistant")
    evaluated = {json.loads(x)["situation"] for x in open(out / "eval" / "grpo" / "results.jsonl")}
    assert evaluated and not evaluated & {r.situation for r in train}
    assert (out / "data" / "README.md").read_text().strip()
    assert (out / "data" / "emotion_histogram.png").stat().st_size > 1000
    # training: saved models carry the span tokens; curves and metrics exist
    for run in ("sft", "grpo"):
        tok = json.loads((out / run / "model" / "tokenizer.json").read_text())
        added = {t["content"] for t in tok["added_tokens"]}
        assert set(SPAN_TOKENS) <= added, run
        assert (out / run / "metrics.json").exists() and (out / run / "model" / "README.md").exists()
    grpo_metrics = json.loads((out / "grpo" / "metrics.json").read_text())
    text = json.dumps(grpo_metrics)
    for part in ("kardia_reward/format", "kardia_reward/emotion", "kardia_reward/rubric"):
        assert part in text, part
    # eval of base and tuned, and the comparison report
    for name in ("base", "grpo"):
        metrics = json.loads((out / "eval" / name / "metrics.json").read_text())
        n_items = sum(1 for _ in open(out / "eval" / name / "results.jsonl"))
        assert n_items >= 1
        assert metrics["criteria"]["emotion_accuracy"]["n"] == n_items
        assert (out / "eval" / name / "report.md").exists() and (out / "eval" / name / "report.html").exists()
        assert metrics["labels"]["chance"]["uniform"] == 1 / 32 and metrics["labels"]["predicted"]
    assert "## Targets" in (out / "results.md").read_text()
    assert (out / "sft" / "model" / "kardia_prompt.json").exists()  # the training profile travels with the model
    for f in ("compare.md", "compare.html", "radar_overlay.png"):
        assert (out / "compare" / f).stat().st_size > 200, f
    # the headline leads compare.md: each target with its measured figure, and the data audit of the kept turns
    compare_md = (out / "compare" / "compare.md").read_text()
    assert compare_md.startswith("# kardia demo: does the method make the model better?")
    head = json.loads((out / "headline.json").read_text())
    assert head["audit"]["emotion_is_gold"] == head["audit"]["assistant_turns"] == len(train) + sum(
        1 for _ in open(out / "data" / "test.jsonl"))
    assert head["audit"]["role_slips"] == 0 and set(head["targets"]) and "paired" in result["summary"]
    # the learning curve: SFT checkpoints evaluated (tiny keeps 2 points, one of them the final model)
    assert "## Learning curve" in (out / "results.md").read_text() and (out / "learning_curve.png").exists()
    assert result["summary"].startswith("base -> tuned:")
    assert json.loads((out / "summary.json").read_text())["summary"] == result["summary"]


def test_rerun_resumes_every_finished_stage(demo_dir):
    out, _ = demo_dir
    before = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "kardia.cli", "demo", "--size", "tiny", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.count("done earlier, skipped") == 10
    assert "base -> tuned:" in proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in (out / "stages").iterdir()}
    assert before == after
