"""SFT then GRPO end to end on CPU with TRL: tiny model first, then the embedded model for one step each.

The judge is the FAKE OpenAI-compatible server (real HTTP on 127.0.0.1, scripted scores), reached
through the real openai client by `kardia.judge`. Run under the CPU lock:
    flock /tmp/kardia-cpu.lock python -m pytest -q tests/test_train_run.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from train_helpers import EMOTIONS, write_dialogues

pytestmark = pytest.mark.slow

SCORES = {"relevance": 4, "fluency": 3, "empathy": 5, "persona_consistency": 2, "safety": 5}
RUBRIC_REWARD = sum((s - 1) / 4 for s in SCORES.values()) / len(SCORES)  # 0.7


def _judge_responder(messages, body):
    """FAKE judge: always the same five scores, as JSON."""
    return json.dumps(SCORES)


@pytest.fixture(scope="module")
def judge():
    from kardia.testing.fake_openai_server import FakeOpenAIServer

    server = FakeOpenAIServer(responder=_judge_responder, model_name="fake-judge").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dialogues(tmp_path_factory.mktemp("data") / "dialogues.jsonl", n=8, turns=2)


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_model_path, data):
    """Full fine-tuning stopped at step 2 (checkpoint-2), then resumed to step 3."""
    from kardia.train.config import SFTRunConfig, load_config
    from kardia.train.sft import run_sft

    out = tmp_path_factory.mktemp("sft")
    common = dict(model=tiny_model_path, output_dir=str(out), **{"data.path": str(data)})
    first = run_sft(load_config(SFTRunConfig, None, ["save_steps=2", "learning_rate=1e-3"], "cpu", max_steps=2, **common), log=lambda s: None)
    second = run_sft(load_config(SFTRunConfig, None, ["save_steps=2", "learning_rate=1e-3"], "cpu", max_steps=3, **common), resume=True, log=lambda s: None)
    return out, first, second


def test_sft_trains_resumes_and_saves_a_loadable_model(sft_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kardia.llm import SamplingParams, load_llm
    from kardia.spans import SPAN_TOKENS

    out, first, second = sft_run
    assert first["global_step"] == 2 and first["resumed_from"] is None
    assert second["resumed_from"].endswith("checkpoint-2") and second["global_step"] == 3
    steps = [r["step"] for r in json.loads((out / "metrics.json").read_text())["log_history"] if "loss" in r]
    assert steps == [1, 2, 3]  # steps 1-2 restored from the checkpoint's state, step 3 trained after the resume
    model_dir = Path(second["model_dir"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert all(t in tok.get_vocab() and t not in tok.all_special_tokens for t in SPAN_TOKENS)
    assert "{% generation %}" in tok.chat_template or "generation -%}" in tok.chat_template
    card = (model_dir / "README.md").read_text()
    assert "base_model:" in card and "not clinical treatment" in card and "dialogues.jsonl" in card and "train_loss" in card
    assert list(out.rglob("events.out.tfevents.*")), "no TensorBoard log"
    assert (out / "curves.png").stat().st_size > 1000
    # the saved folder loads through kardia's own backend (what `kardia chat --model` uses) and generates
    llm = load_llm(str(model_dir), cache=False)
    c = llm.chat([{"role": "user", "content": "hello"}], SamplingParams(max_tokens=5, temperature=0))
    assert c.completion_tokens > 0


def test_assistant_only_loss_masks_everything_but_assistant_turns(sft_run, data):
    """The training template puts the loss on assistant content + <|im_end|> only."""
    from transformers import AutoTokenizer

    from kardia.train.datasets import iter_sft_examples

    tok = AutoTokenizer.from_pretrained(sft_run[2]["model_dir"])
    msgs = next(iter_sft_examples(data, "easy"))["messages"]
    enc = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True, tokenize=True)
    kept = tok.decode([i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])
    expected = "".join(m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant")
    assert kept == expected


def test_sft_lora_merges_into_a_plain_model(tmp_path, tiny_model_path, data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kardia.train.config import SFTRunConfig, load_config
    from kardia.train.sft import run_sft

    cfg = load_config(SFTRunConfig, None, ["lora.r=4", "lora.alpha=8"], "cpu", model=tiny_model_path, output_dir=str(tmp_path),
                      max_steps=1, **{"data.path": str(data), "lora.enabled": True})
    s = run_sft(cfg, log=lambda s: None)
    model_dir = Path(s["model_dir"])
    assert not (model_dir / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.get_input_embeddings().weight.shape[0] == len(AutoTokenizer.from_pretrained(model_dir))


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, sft_run, data, judge):
    """GRPO from the SFT model: stop at step 2 (checkpoints 1, 2), then resume from checkpoint-1 to step 3."""
    from transformers import AutoTokenizer

    from kardia.train.config import GRPORunConfig, load_config
    from kardia.train.grpo import run_grpo

    model_dir = sft_run[2]["model_dir"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    from kardia.spans import SPAN_TOKENS

    # bias generation toward the span tokens, so the random tiny policy emits them and we can see them survive decoding
    bias = [[[tok.convert_tokens_to_ids(t)], 8.0] for t in SPAN_TOKENS]
    out = tmp_path_factory.mktemp("grpo")
    overrides = [
        "rewards=[{name: format, weight: 0.3333}, {name: emotion, weight: 0.3333}, {name: rubric, weight: 0.3333}]",
        "judge.cache=false", "max_completion_length=24", "save_steps=1", "learning_rate=1e-5", "log_completions=true",
        "extra={generation_kwargs: {sequence_bias: " + json.dumps(bias) + "}}",
    ]
    common = dict(model=model_dir, output_dir=str(out), num_generations=4, **{"data.path": str(data), "judge.model": judge.model_string()})
    first = run_grpo(load_config(GRPORunConfig, None, overrides, "cpu", max_steps=2, **common), log=lambda s: None)
    requests_after_first = judge.stats.completed
    second = run_grpo(load_config(GRPORunConfig, None, overrides, "cpu", max_steps=3, **common),
                      resume=str(out / "checkpoint-1"), log=lambda s: None)
    return out, first, second, requests_after_first


def test_grpo_logs_each_reward_and_judge_dimension(grpo_run, judge):
    out, first, second, requests_after_first = grpo_run
    assert first["global_step"] == 2 and second["global_step"] == 3 and second["resumed_from"].endswith("checkpoint-1")
    assert requests_after_first == 2 * 4  # one judge call per completion: 2 steps x 4 completions
    hist = json.loads((out / "metrics.json").read_text())["log_history"]
    logged = [r for r in hist if "rewards/rubric_reward/mean" in r]
    assert len(logged) == 3
    for r in logged:
        assert r["rewards/rubric_reward/mean"] == pytest.approx(RUBRIC_REWARD)
        assert "rewards/format_reward/mean" in r and "rewards/emotion_reward/mean" in r
        assert r["rubric_reward/empathy"] == pytest.approx(5.0) and r["rubric_reward/failures"] == 0
    # the same curves reach TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for ev in out.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/rewards/format_reward/mean", "train/rewards/rubric_reward/mean", "train/rubric_reward/persona_consistency"} <= tags


def test_grpo_completions_keep_span_tokens_and_resume_without_duplicates(grpo_run):
    from kardia.spans import SPAN_TOKENS

    out, first, second, _ = grpo_run
    rows = [json.loads(x) for x in (out / "completions" / "rank0.jsonl").read_text().splitlines()]
    # steps 0 and 1 from the first run; step 1 (after checkpoint-1) was cut and redone; then step 2
    assert sorted({r["step"] for r in rows}) == [0, 1, 2]
    assert [sum(r["step"] == s for r in rows) for s in (0, 1, 2)] == [4, 4, 4]
    assert all(set(r["rewards"]) == {"format_reward", "emotion_reward", "rubric_reward"} for r in rows)
    # only the hard split (dialogues 4-7), each prompt with its dialogue's gold label as a column
    for r in rows:
        idx = int(r["id"].split(":")[0].removeprefix("dlg"))
        assert idx >= 4 and r["emotion"] == EMOTIONS[idx % len(EMOTIONS)]
    # TRL decoded these with skip_special_tokens=True: the span markers are still there
    seen = {t for r in rows for t in SPAN_TOKENS if t in r["completion"]}
    assert len(seen) >= 4, seen
    assert list((out / "completions").glob("*.parquet")), "TRL's own completions table is missing"


def test_grpo_model_card_and_reload(grpo_run):
    from kardia.llm import SamplingParams, load_llm

    out, _, second, _ = grpo_run
    model_dir = Path(second["model_dir"])
    info = json.loads((model_dir / "kardia_train.json").read_text())
    assert info["stage"] == "grpo" and info["lineage"][-1]["stage"] == "sft"
    assert [r["name"] for r in info["rewards"]] == ["format", "emotion", "rubric"]
    card = (model_dir / "README.md").read_text()
    assert "## Rewards" in card and "rewards/rubric_reward/mean" in card
    c = load_llm(str(model_dir), cache=False).chat([{"role": "user", "content": "hi"}], SamplingParams(max_tokens=4, temperature=0))
    assert c.completion_tokens > 0


def test_embedded_model_one_sft_step_then_one_grpo_step(tmp_path, embedded_path, data, judge):
    """The real 135M model through both trainers (one step each, short completions), kardia_reward by default."""
    from kardia.train.config import GRPORunConfig, SFTRunConfig, load_config
    from kardia.train.grpo import run_grpo
    from kardia.train.sft import run_sft

    s = run_sft(load_config(SFTRunConfig, None, ["per_device_train_batch_size=1", "max_length=768"], "cpu",
                            model="embedded", output_dir=str(tmp_path / "sft"), max_steps=1, **{"data.path": str(data)}), log=lambda s: None)
    assert s["global_step"] == 1 and s["metrics"]["train_loss"] > 0
    g = run_grpo(load_config(GRPORunConfig, None, ["per_device_train_batch_size=2", "max_completion_length=12", "judge.cache=false"], "cpu",
                             model=s["model_dir"], output_dir=str(tmp_path / "grpo"), max_steps=1, num_generations=2,
                             **{"data.path": str(data), "judge.model": judge.model_string()}), log=lambda s: None)
    hist = json.loads((tmp_path / "grpo" / "metrics.json").read_text())["log_history"]
    row = next(r for r in hist if "rewards/kardia_reward/mean" in r)
    assert {"kardia_reward/format", "kardia_reward/emotion", "kardia_reward/rubric"} <= set(row)
    assert row["kardia_reward/rubric"] == pytest.approx(RUBRIC_REWARD)
    assert g["global_step"] == 1 and (Path(g["model_dir"]) / "README.md").exists()


def test_span_tokens_are_atomic_non_special_and_survive_skip_special(embedded_path):
    from transformers import AutoTokenizer

    from kardia.spans import SPAN_TOKENS, render
    from kardia.train.chat_format import add_span_tokens, prepare_tokenizer

    tok = AutoTokenizer.from_pretrained(embedded_path)
    n = len(tok)
    ids = prepare_tokenizer(tok)
    assert len(tok) == n + 8 and prepare_tokenizer(tok) == ids and len(tok) == n + 8  # idempotent
    text = render("They are scared.", "A burst tire on a busy road.", "terrified", "That sounds frightening.")
    enc = tok.encode(text, add_special_tokens=False)
    assert [i for i in enc if i in ids] == ids  # each marker is one token, in order
    assert tok.decode(enc + [tok.eos_token_id], skip_special_tokens=True) == text
    # a tokenizer holding the markers as special tokens is refused, not silently used
    bad = AutoTokenizer.from_pretrained(embedded_path)
    bad.add_special_tokens({"additional_special_tokens": list(SPAN_TOKENS)})
    with pytest.raises(ValueError, match="special tokens"):
        add_span_tokens(bad)
