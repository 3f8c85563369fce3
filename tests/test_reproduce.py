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

    llm = LocalLLM(tiny_model_path, max_batch=8)
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
    from kardia.data.fake_roles import scripted_responder
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
