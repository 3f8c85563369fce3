"""Training configs, datasets and --dry-run: plain Python, no torch (fast; no CPU lock needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kardia.config import ConfigError
from kardia.records import RecordError
from kardia.train import datasets as kd
from kardia.train.config import GRPORunConfig, SFTRunConfig, load_config

from train_helpers import write_dialogues

REPO = Path(__file__).resolve().parent.parent


def test_paper_defaults_and_cpu_preset_precedence(tmp_path):
    paper = SFTRunConfig.load(None)
    assert (paper.num_train_epochs, paper.learning_rate, paper.optim) == (2.0, 1e-4, "adamw_torch")
    g = GRPORunConfig.load(None)
    assert (g.learning_rate, g.num_generations, g.num_train_epochs) == (1e-6, 8, 2.0)
    assert [r.name for r in g.rewards] == ["kardia"]
    # preset fills only what is unset; --set and YAML win
    cpu = load_config(SFTRunConfig, None, ["learning_rate=5e-5"], preset="cpu")
    assert cpu.per_device_train_batch_size == 2 and cpu.max_length == 1024 and cpu.learning_rate == 5e-5
    y = tmp_path / "c.yaml"
    y.write_text("preset: cpu\nmax_length: 333\nlora: {enabled: true}\n")
    c = SFTRunConfig.load(y)
    assert c.max_length == 333 and c.gradient_accumulation_steps == 1 and c.lora.enabled and c.lora.r == 16
    # explicit CLI values are quoted: a model string with a colon stays a string
    j = load_config(GRPORunConfig, None, [], None, **{"judge.model": "openai:m@http://127.0.0.1:9/v1"})
    assert j.judge.model == "openai:m@http://127.0.0.1:9/v1"


def test_bad_configs_are_named():
    with pytest.raises(ConfigError, match="num_generations"):
        GRPORunConfig.load(None, ["per_device_train_batch_size=3", "gradient_accumulation_steps=1", "num_generations=2"])
    with pytest.raises(ConfigError, match="rewards"):
        GRPORunConfig.load(None, ["rewards=[{name: nope}]"])
    with pytest.raises(ConfigError, match="lora.rr"):
        SFTRunConfig.load(None, ["lora.rr=3"])


def test_shipped_configs_load():
    files = sorted((REPO / "configs" / "train").glob("*.yaml"))
    assert {f.name for f in files} >= {"sft.yaml", "sft_cpu.yaml", "grpo.yaml", "grpo_cpu.yaml"}
    for f in files:
        cls = SFTRunConfig if f.name.startswith("sft") else GRPORunConfig
        cls.load(f)
    acc = {f.name for f in (REPO / "configs" / "accelerate").glob("*.yaml")}
    assert acc >= {"single_gpu.yaml", "ds_zero2_8gpu.yaml", "ds_zero3_8gpu.yaml", "fsdp_8gpu.yaml"}


def test_sft_examples_whole_dialogue_tokens_and_system_prompt(tmp_path):
    from kardia.prompts import system_prompt

    path = write_dialogues(tmp_path / "d.jsonl", n=4, turns=3, hard_from=2)
    stats = kd.DataStats()
    ex = list(kd.iter_sft_examples(path, "easy", stats=stats))
    assert len(ex) == 2 and stats.skipped_difficulty == 2
    msgs = ex[1]["messages"]  # record 1 was written with tags
    assert [m["role"] for m in msgs] == ["system"] + ["user", "assistant"] * 3
    assert msgs[0]["content"] == system_prompt("MBTI: INFP\nAbout: student number 1, likes hiking\nSignature: keep going", "I felt joyful when my exam results came back (1)")
    assert all(m["content"].startswith("<|understanding_begin|>") and "<emotion>" not in m["content"] for m in msgs if m["role"] == "assistant")
    assert stats.turns_rewritten_from_tags == 3 and stats.turns_not_four_spans == 0


def test_grpo_prompts_one_per_assistant_turn_with_reward_columns(tmp_path):
    path = write_dialogues(tmp_path / "d.jsonl", n=4, turns=3, hard_from=2)
    rows = list(kd.iter_grpo_prompts(path, "hard"))
    assert len(rows) == 2 * 3
    r = rows[2]
    assert r["id"] == "dlg2:2" and r["emotion"] == "afraid" and r["person"].startswith("MBTI") and "exam" in r["situation"]
    assert [m["role"] for m in r["prompt"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert r["prompt"][-1]["content"].startswith("Turn 2")


def test_bad_record_names_file_line_field(tmp_path):
    path = write_dialogues(tmp_path / "d.jsonl", n=3)
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    bad["messages"][1]["role"] = "assistant"
    lines[1] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as err:
        list(kd.iter_sft_examples(path, "all"))
    assert err.value.line == 2 and err.value.field == "messages" and str(path) in str(err.value)


def test_no_examples_of_the_difficulty_is_a_clear_error(tmp_path):
    path = write_dialogues(tmp_path / "d.jsonl", n=3, hard_from=99)
    with pytest.raises(ValueError, match="data.difficulty=all"):
        kd.count(path, "grpo", "hard")


def test_dry_run_prints_plan(tmp_path):
    from kardia.cli import app

    path = write_dialogues(tmp_path / "d.jsonl", n=8, turns=2)  # 4 hard dialogues -> 8 prompts
    res = CliRunner().invoke(
        app,
        ["train", "grpo", "--dry-run", "--preset", "cpu", "-d", str(path), "-g", "4",
         "--set", "per_device_train_batch_size=4", "--set", "gradient_accumulation_steps=2", "--set", "judge.mode=per_dimension",
         "--set", "num_processes=2"],
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert "num_generations: 4" in out  # the effective config
    # 4 x 2 x 2 processes = 16 completions = 4 prompts per step; 8 prompts -> 2 steps; 5 judge calls each
    for key, val in [("prompts", 8), ("completions_per_step", 16), ("prompts_per_step", 4), ("total_steps", 2), ("judge_calls_per_step", 80)]:
        assert any(line.split("│")[1:3] and line.split("│")[1].strip() == key and line.split("│")[2].strip() == str(val) for line in out.splitlines()), (key, out)
    res = CliRunner().invoke(app, ["train", "sft", "--dry-run", "-d", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "missing.jsonl" in res.output


def test_grpo_rewards_are_built_with_the_reward_factories_real_signatures():
    """build_rewards calls the rewards' factories directly (no signature inspection that could drop a setting)."""
    from kardia.train.grpo import build_rewards

    cfg = GRPORunConfig.load(None, ["rewards=[{name: kardia, weight: 0.5}, {name: rubric}, {name: format}]",
                                    "judge.model=openai:j@http://127.0.0.1:9/v1", "judge.mode=per_dimension",
                                    "judge.scorer=text", "judge.cache=false", "judge.gate=true",
                                    "judge.weights=[0.2, 0.3, 0.5]"])
    funcs, weights, described = build_rewards(cfg)
    kardia, rubric, fmt = funcs
    assert weights == [0.5, 1.0, 1.0] and [d["name"] for d in described] == ["kardia", "rubric", "format"]
    assert kardia.weights == (0.2, 0.3, 0.5) and kardia.gate is True
    for judge in (kardia.rubric.judge, rubric.judge):
        assert judge.model == "openai:j@http://127.0.0.1:9/v1" and judge.mode == "per_dimension"
        assert judge.scorer == "text" and judge.cache is False
