"""The pieces of `kardia reproduce`: the label reader, gold-label build data, the compact training
profile that travels with a model, the SFT levers, ED situation CSVs as eval data, and bad input."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest

from kardia.emotions import LABELS, chance_levels, most_probable_label


# -- the label reader ---------------------------------------------------------------------------------
class ScriptedLabelModel:
    """FAKE local model: fixed label log-probabilities, one set for content-free input, one otherwise."""

    def __init__(self, scores: dict[str, float], prior: dict[str, float]):
        self.scores, self.prior = scores, prior

    async def asequence_logprobs(self, batch, candidates, assistant_prefix=""):
        out = []
        for msgs in batch:
            table = self.prior if "N/A" in msgs[-1]["content"] else self.scores
            out.append({c: table[c.strip()] for c in candidates})
        return out


def _table(base: float, **over: float) -> dict[str, float]:
    return {lab: over.get(lab, base) for lab in LABELS}


def test_calibration_subtracts_the_prompt_prior():
    # the model always favours "disappointed"; the situation raises "jealous" most above that prior
    scores = _table(-6.0, disappointed=-1.0, jealous=-2.0)
    prior = _table(-6.0, disappointed=-0.5, jealous=-5.0)
    llm = ScriptedLabelModel(scores, prior)
    msgs = [{"role": "user", "content": "my coworker got the car I wanted"}]
    assert asyncio.run(most_probable_label(llm, msgs))[0] == "disappointed"
    label, p = asyncio.run(most_probable_label(llm, msgs, prior))
    assert label == "jealous" and 0 < p <= 1


def test_chance_levels_of_a_sample():
    ch = chance_levels(["sad", "sad", "joyful", "proud"])
    assert ch["uniform"] == pytest.approx(1 / 32)
    assert ch["majority"] == 0.5 and ch["majority_label"] == "sad"


@pytest.mark.slow
def test_sequence_logprobs_equal_a_full_forward(tiny_model_path):
    """Whole-label scores through the shared KV cache equal scoring prompt + label in one plain forward,
    for labels of one and of several tokens, with left padding in the batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kardia.llm.local import LocalLLM

    llm = LocalLLM(tiny_model_path, max_batch=8, dtype="float32")  # exact: bf16 autocast would round
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    batch = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a much longer message about my week"}]]
    cands = [" sad", " apprehensive", " nostalgic"]
    assert max(len(tok.encode(c, add_special_tokens=False)) for c in cands) > 1
    got = asyncio.run(llm.asequence_logprobs(batch, cands, assistant_prefix="Emotion:"))
    for msgs, row in zip(batch, got):
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) + "Emotion:"
        p_ids = tok.encode(prompt, add_special_tokens=False)
        for c in cands:
            c_ids = tok.encode(c, add_special_tokens=False)
            with torch.no_grad():
                lp = torch.log_softmax(model(torch.tensor([p_ids + c_ids])).logits[0].float(), -1)
            want = sum(lp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(c_ids))
            assert row[c] == pytest.approx(want, abs=1e-3)
    llm.close()


def test_shared_prefix_probs_equal_separate_passes(tiny_model_path):
    """A judge's per-dimension prompts share the data block: scoring them on one shared KV cache gives
    the same candidate probabilities as one forward per prompt, across requests of different lengths."""
    from kardia.llm.local import LocalLLM

    llm = LocalLLM(tiny_model_path, max_batch=8, dtype="float32")
    head = "Rate the reply below.\n| the person: my dog died last week and the house feels empty\n"
    groups = [
        [[{"role": "system", "content": "be fair"}, {"role": "user", "content": head + f"# Dimension {d}\nAnswer 1-5."}]
         for d in ("empathy", "fluency and grammar", "safety")],
        [[{"role": "system", "content": "be fair"}, {"role": "user", "content": "short " + d}] for d in ("a", "bb", "ccc dd")],
    ]
    cands = ["1", "2", "3", "4", "5"]

    async def both():
        shared = await asyncio.gather(*(llm.anext_token_probs_shared(g, cands, "Score: ") for g in groups))
        separate = [await llm.anext_token_probs(g, cands, "Score: ") for g in groups]
        return shared, separate

    shared, separate = asyncio.run(both())
    for sg, pg in zip(shared, separate):
        assert len(sg) == len(pg) == 3
        for a, b in zip(sg, pg):
            assert sum(a.values()) == pytest.approx(1.0)
            for c in cands:
                assert a[c] == pytest.approx(b[c], abs=1e-4)
    assert any(size == 2 for size in llm.batch_sizes)  # the two shared requests formed one batch
    llm.close()


# -- build data whose emotion span is the gold label ----------------------------------------------------
def test_filters_for_gold_label_whole_sentences_and_copies():
    from kardia.data.filters import check_complete_sentences, check_copied_understanding, check_gold_emotion, cut_to_sentence
    from kardia.spans import render

    assert cut_to_sentence("I see. You are so") == "I see."
    assert cut_to_sentence("no end at all") == ""
    assert cut_to_sentence('She said "fine." ') == 'She said "fine."'

    def rec(und, rea, emo, resp, gold="sad", user="My dog died last week and I miss him."):
        return {"emotion": gold, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": user},
                                              {"role": "assistant", "content": render(und, rea, emo, resp)}]}

    good = rec("They miss their dog deeply.", "Losing a pet hurts; they need comfort.", "sad", "I am so sorry about your dog.")
    assert check_gold_emotion(good) == [] and check_complete_sentences(good) == [] and check_copied_understanding(good) == []
    assert check_gold_emotion(rec("They miss him.", "It hurts.", "joyful", "Sorry.")) != []
    assert check_complete_sentences(rec("They miss their dog and", "It hurts.", "sad", "Sorry.")) != []
    assert check_copied_understanding(rec("My dog died last week and I miss him.", "It hurts.", "sad", "Sorry.")) != []
    assert check_copied_understanding(rec("They miss their dog a lot today.", "They miss their dog a lot today.", "sad", "Sorry.")) != []
    assert check_copied_understanding(rec("They miss him.", "It hurts.", "sad", "My dog died last week and I miss him.")) != []


def test_build_writes_the_gold_label_into_every_emotion_span(fake_server, tmp_path):
    """emotion_source=target (the default): the emotion span is the seed's label, recorded per turn."""
    from kardia.data.config import BuildConfig
    from kardia.data.engine import run_build
    from kardia.testing.fake_roles import scripted_responder
    from kardia.spans import parse

    srv = fake_server(responder=scripted_responder())
    cfg = BuildConfig.model_validate({
        "profiles": [{"kind": "person", "path": "kardia:samples/profiles.jsonl"}],
        "seeds": [{"kind": "jsonl", "path": "kardia:samples/situations.jsonl"}],
        "dialogues_per_profile": 2, "max_exchanges": 2, "max_revisions": 1, "llm_cache": False, "concurrency": 4,
        "models": {"user": srv.model_string(), "responder": srv.model_string(), "critic": srv.model_string()},
        "anonymise": {"salt": "s"}, "export": {"hf": False, "plot": False, "card": False},
    })
    run_build(cfg, tmp_path, progress=False)
    recs = [json.loads(x) for x in (tmp_path / "dialogues.jsonl").read_text().splitlines()]
    assert recs
    for r in recs:
        assert r["meta"]["emotion_source"] == "target"
        for m in r["messages"]:
            if m["role"] == "assistant":
                assert parse(m["content"]).emotion == r["emotion"]
    drafts = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert all(d.get("emotion_source") == "target" for d in drafts if d.get("kind") == "draft")


# -- the compact training profile travels with the model -----------------------------------------------
def test_prompt_profile_is_saved_and_used_by_eval(tmp_path):
    from kardia.eval.loaders import EvalItem
    from kardia.eval.run import EvalConfig, Evaluator
    from kardia.prompts import PromptProfile

    prof = PromptProfile.named("system_compact", profile_words=3)
    prof.save(tmp_path)
    loaded = PromptProfile.for_model(str(tmp_path))
    text = loaded.render("alpha beta gamma delta epsilon", "my dog died")
    assert "alpha beta gamma ..." in text and "delta" not in text and "my dog died" in text
    assert "sad, trusting" not in text  # no 32-label list in the compact profile
    assert PromptProfile.for_model("embedded").template_text != prof.template_text

    ev = Evaluator.__new__(Evaluator)  # only the prompt side: no model is loaded
    ev.cfg, ev.mode, ev.prompt = EvalConfig(model=str(tmp_path), judge="none", safety=False), "spans", loaded
    item = EvalItem(id="x", dataset="t", dialogue_id="x", turn_index=1, situation="my dog died", profile="a b",
                    history=[{"role": "user", "content": "My dog died."}])
    assert ev.messages(item)[0]["content"] == loaded.render("a b", "my dog died")


# -- SFT levers ---------------------------------------------------------------------------------------
def test_emotion_token_weights_cover_the_label_and_its_closing_marker():
    import torch

    from kardia.train.sft import emotion_token_weights

    B, E = 7, 8  # begin / end ids
    ids = torch.tensor([[1, 2, B, 5, 6, E, 3, 4]])
    w = emotion_token_weights(ids, B, E, 4.0)
    # aligned with ids[:, 1:] = [2, B, 5, 6, E, 3, 4]
    assert w.tolist() == [[1.0, 1.0, 4.0, 4.0, 4.0, 1.0, 1.0]]


@pytest.mark.slow
def test_only_the_top_layers_train(tiny_model_path):
    from transformers import AutoModelForCausalLM

    from kardia.train.common import TrainError
    from kardia.train.sft import freeze_below_top_layers

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert freeze_below_top_layers(model, 1) > 0
    layers = model.get_decoder().layers
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert model.get_output_embeddings().weight.requires_grad  # the span-marker rows must learn
    with pytest.raises(TrainError, match="decoder layers"):
        freeze_below_top_layers(model, 99)


# -- ED situation CSVs as eval data, and bad input -------------------------------------------------------
def _write_csv(path: Path, rows: list[dict], fields=("text", "aug_text", "label")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields))
        w.writeheader()
        w.writerows(rows)
    return path


def test_ed_situation_csv_gives_one_opening_turn_per_row(tmp_path):
    from kardia.eval.loaders import detect_format, load_items

    p = _write_csv(tmp_path / "s.csv", [{"text": "my dog died_comma_ sadly", "aug_text": "x", "label": "0"},
                                        {"text": "i got a promotion", "aug_text": "y", "label": "29"}])
    assert detect_format(p) == "ed_situations"
    items = list(load_items(str(p)))
    assert [i.gold_emotion for i in items] == ["sad", "proud"]
    assert items[0].history == [{"role": "user", "content": "My dog died, sadly"}]


def _cli(*args: str):
    from typer.testing import CliRunner

    from kardia.cli import app

    return CliRunner().invoke(app, list(args))


def test_reproduce_rejects_bad_input_before_any_model_work(tmp_path):
    out = tmp_path / "out"
    r = _cli("reproduce", "--ed", str(tmp_path / "nope"), "--out", str(out))
    assert r.exit_code != 0 and "ED folder not found" in r.output

    ed = tmp_path / "ed"
    ed.mkdir()
    r = _cli("reproduce", "--ed", str(ed), "--out", str(out))
    assert r.exit_code != 0 and "ed_situations_train.csv" in r.output

    _write_csv(ed / "ed_situations_train.csv", [{"text": "a", "aug_text": "b"}], fields=("text", "aug_text"))
    r = _cli("reproduce", "--ed", str(ed), "--out", str(out))
    assert r.exit_code == 2 and "ed_situations_train.csv:1: field label" in r.output

    _write_csv(ed / "ed_situations_train.csv", [{"text": "fine", "aug_text": "", "label": "3"},
                                                {"text": "bad", "aug_text": "", "label": "32"}])
    r = _cli("reproduce", "--ed", str(ed), "--out", str(out))
    assert r.exit_code == 2 and "ed_situations_train.csv:3: field label" in r.output and "32" in r.output
    assert not (out / "stages").exists()  # nothing ran


def test_learning_curve_fit_interval_and_cost(tmp_path):
    """The curve's arithmetic: Wilson intervals, a log2 fit that recovers a known slope, the examples a
    target needs, and the table that turns them into CPU time from the run's own seconds."""
    import json as _json
    import math

    from kardia.eval.metrics import wilson
    from kardia.reproduce_curve import curve_table, examples_for, fit_log2

    lo, hi = wilson(0, 50)
    assert lo == 0.0 and 0.05 < hi < 0.09  # never a zero-width interval at 0
    lo, hi = wilson(10, 100)
    assert 0.05 < lo < 0.1 < hi < 0.18
    a, b = fit_log2([(100, 0.10), (200, 0.15), (400, 0.20)])
    assert math.isclose(b, 0.05) and math.isclose(examples_for(0.30, (a, b)), 1600)
    assert fit_log2([(100, 0.1)]) is None and examples_for(0.3, (0.5, -0.1)) is None

    def write(name: str, correct: list[bool]) -> None:
        d = tmp_path / "eval" / name
        d.mkdir(parents=True)
        rows = [{"id": f"i{k}", "emotion_correct": c, "format_ok": True} for k, c in enumerate(correct)]
        (d / "results.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))

    write("curve/step-10", [True] * 2 + [False] * 18)
    write("curve/step-20", [True] * 3 + [False] * 17)
    write("sft", [True] * 4 + [False] * 16 + [True] * 30)  # the final model: only the curve's 20 ids count
    curve = {"points": [{"step": 10, "examples": 80}, {"step": 20, "examples": 160}], "limit": 20, "batch": 8}
    for p, step in zip(curve["points"], (10, 20)):
        p.update({"n": 20, "correct": None, "accuracy": None, "lo": None, "hi": None, "format_validity": None})
    from kardia.reproduce_curve import _accuracy
    from kardia.eval.run import read_results

    for p in curve["points"]:
        p.update(_accuracy(read_results(tmp_path / "eval" / f"curve/step-{p['step']}")))
    stages = {"sft": {"global_step": 40, "wall_s": 320.0}, "build": {"counts": {"train_easy": 320}}}
    lines, summary = curve_table(tmp_path, curve, stages, build_s=1600.0, target=0.30)
    accs = [p["accuracy"] for p in summary["points"]]
    assert accs == [0.10, 0.15, 0.20] and summary["points"][-1]["examples"] == 320
    assert math.isclose(summary["fit"][1], 0.05) and math.isclose(summary["examples_for_target"], 1280)
    assert math.isclose(summary["build_s_per_sft_example"], 5.0) and math.isclose(summary["sft_s_per_example"], 1.0)
    assert math.isclose(summary["extra_cpu_hours_for_target"], (1280 - 320) * 6.0 / 3600)
    assert "points per doubling" in "\n".join(lines) and (tmp_path / "learning_curve.png").stat().st_size > 1000


def test_reproduce_and_demo_build_their_configs_as_objects(tmp_path, monkeypatch):
    """Options reach the configs as objects (file < --set < explicit); `--judge off` means no judged eval."""
    import kardia.demo
    import kardia.reproduce

    seen = {}
    monkeypatch.setattr(kardia.reproduce, "run_reproduce", lambda cfg: seen.setdefault("reproduce", cfg))
    monkeypatch.setattr(kardia.demo, "run_demo", lambda cfg: seen.setdefault("demo", cfg))
    cfg_file = tmp_path / "r.yaml"
    cfg_file.write_text("out: from-file\nsize: tiny\nseed: 3\nmodel: m-file\n", encoding="utf-8")
    r = _cli("reproduce", "--config", str(cfg_file), "--set", "model=m-set", "--set", "seed=4", "--model", "m-opt",
             "--judge", "off", "--roles", "1e3")
    assert r.exit_code == 0, r.output
    c = seen["reproduce"]
    assert (c.out, c.size, c.seed, c.model, c.judge, c.user, c.critic) == ("from-file", "tiny", 4, "m-opt", None, "1e3", "1e3")
    r = _cli("demo", "--config", str(cfg_file).replace("r.yaml", "d.yaml"))
    assert r.exit_code == 2 and "kardia: error:" in r.output and "config file not found" in r.output
    r = _cli("demo", "--size", "tiny", "--set", "judge=none")
    assert r.exit_code == 0, r.output
    assert seen["demo"].size == "tiny" and seen["demo"].out == "kardia-demo" and seen["demo"].judge is None
