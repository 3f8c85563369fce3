"""kardia eval / compare / pairwise / human: real data slices, the FAKE OpenAI server as a scripted model and judge.

Every report number is recomputed here from the per-item results.jsonl, independently of kardia.eval.metrics.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kardia.emotions import LABELS
from kardia.eval.human import export_sample, import_ratings, krippendorff_alpha
from kardia.eval.loaders import load_items
from kardia.eval.run import EvalConfig, EvalError, run_eval
from kardia.records import RecordError
from kardia.spans import render

ED = "empatheticdialogues/ed_valid_utterances_kaggle.csv"
ESCONV = "esconv/esconv_valid.jsonl"
DIMS = ["relevance", "fluency", "empathy", "persona_consistency", "safety"]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("KARDIA_HOME", str(tmp_path / "home"))
    # The FAKE server module annotates `request: Request` under `from __future__ import annotations` but
    # imports Request inside a function, so FastAPI cannot resolve it (HTTP 422). Until the foundation
    # file is fixed, give the module the name it needs (no behaviour of the server changes).
    import fastapi

    import kardia.testing.fake_openai_server as fake

    if not hasattr(fake, "Request"):
        monkeypatch.setattr(fake, "Request", fastapi.Request, raising=False)


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


# -- scripted FAKE model and judge ----------------------------------------------------------------
def fake_model(marker: str = "alpha"):
    """Spans mode: four spans, emotion 'sad' or 'afraid' by a hash of the person's message; every 4th
    answer drops the reasoning span. Plain mode: a reply; the emotion question gets 'Afraid.'"""

    def respond(messages, body):
        last = messages[-1]["content"]
        if last.startswith("Read this conversation"):
            return "Afraid."
        h = _h(last)
        emotion = ["sad", "afraid", "terrified"][h % 3]
        reply = f"{marker} I hear you, that sounds hard."
        if "four parts" in messages[0]["content"]:
            text = render("they are upset", "something scary happened", emotion, reply)
            if h % 4 == 0:
                text = re.sub(r"<\|reasoning_begin\|>.*?<\|reasoning_end\|>\n", "", text)
            return text
        return reply

    return respond


def fake_judge(messages, body):
    """Scores by a hash of the request; every 5th answer is unparseable (a judge failure)."""
    content = messages[-1]["content"]
    h = _h(content)
    if h % 5 == 0:
        return "I would rather not grade this."
    return json.dumps({d: {"reason": f"{d} reason", "score": 1 + (h >> (3 * i)) % 5} for i, d in enumerate(DIMS)})


def _cfg(tmp_path, model_server, judge_server, shared_data, **kw) -> EvalConfig:
    base = dict(model=model_server.model_string(), judge=judge_server.model_string(), data=str(shared_data / ED),
                out=str(tmp_path / "run"), mode="spans", limit=12, n_boot=200, cache=False, judge_scorer="text")
    base.update(kw)
    return EvalConfig(**base)


def _results(out) -> list[dict]:
    return [json.loads(l) for l in (Path(out) / "results.jsonl").read_text().splitlines() if l.strip()]


# -- loaders ---------------------------------------------------------------------------------------
def test_ed_loader_on_real_data(shared_data):
    path = shared_data / ED
    items = list(load_items(path, limit=40))
    assert len(items) == 40 and len({i.id for i in items}) == 40
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    by_conv = {}
    for r in rows[:200]:
        by_conv.setdefault(r["conv_id"], []).append(r)
    for it in items:
        conv = by_conv[it.dialogue_id]
        assert it.gold_emotion == LABELS[int(conv[0]["label"])]
        assert it.history[-1]["role"] == "user" and it.history[0]["role"] == "user"
        assert [m["role"] for m in it.history] == ["user", "assistant"] * (len(it.history) // 2) + ["user"]
        assert it.gold_response == conv[2 * it.turn_index - 1]["utterance"].replace("_comma_", ",").strip()
        assert "_comma_" not in it.situation + "".join(m["content"] for m in it.history)


def test_esconv_loader_maps_emotions(shared_data, tmp_path):
    items = list(load_items(shared_data / ESCONV, limit=60))
    assert items and all(i.history[-1]["role"] == "user" for i in items)
    for it in items:
        assert it.gold_emotion in LABELS
        roles = [m["role"] for m in it.history]
        assert all(a != b for a, b in zip(roles, roles[1:]))  # merged runs alternate
    first = json.loads((shared_data / ESCONV).read_text().splitlines()[0])
    assert items[0].meta["emotion_type"] == first["emotion_type"]
    # pain: the one shared map gives its nearest label, flagged approximate
    rec = dict(first, emotion_type="pain")
    p = tmp_path / "pain.jsonl"
    p.write_text(json.dumps(rec) + "\n")
    assert {i.gold_emotion for i in load_items(p, fmt="esconv")} == {"devastated"}
    assert {i.gold_emotion for i in load_items(p, fmt="esconv", esconv_include_approximate=False)} == {None}
    # an emotion type without an ED equivalent (match none in a map): generated and judged, but no gold label
    own = tmp_path / "map.yaml"
    own.write_text("pain: {label: null, match: none}\n")
    pain = list(load_items(p, fmt="esconv", esconv_map=own))
    assert pain and all(i.gold_emotion is None and i.meta["emotion_match"] == "none" for i in pain)
    # approximate matches can be excluded
    rec = dict(first, emotion_type="depression")
    p.write_text(json.dumps(rec) + "\n")
    assert {i.gold_emotion for i in load_items(p, fmt="esconv")} == {"sad"}
    assert {i.gold_emotion for i in load_items(p, fmt="esconv", esconv_include_approximate=False)} == {None}


def test_malformed_inputs_name_file_line_field(shared_data, tmp_path):
    src = (shared_data / ED).read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "ed_bad.csv"
    lines = src[:6]
    parts = lines[3].rsplit(",", 1)
    lines[3] = parts[0] + ",99"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError) as e:
        list(load_items(bad))
    assert (e.value.path, e.value.line, e.value.field) == (str(bad), 4, "label")

    nocol = tmp_path / "ed_nocol.csv"
    nocol.write_text("conv_id,utterance_idx,prompt,utterance\nx,1,a,b\n")
    with pytest.raises(RecordError, match=r"ed_nocol.csv:1: field label"):
        list(load_items(nocol))

    first = json.loads((shared_data / ESCONV).read_text().splitlines()[0])
    es = tmp_path / "es.jsonl"
    es.write_text(json.dumps(first) + "\n" + json.dumps(dict(first, emotion_type="boredom")) + "\n")
    with pytest.raises(RecordError) as e:
        list(load_items(es))
    assert (e.value.line, e.value.field) == (2, "emotion_type")
    es.write_text(json.dumps(dict(first, dialog=[{"text": "hi", "speaker": "bot"}])) + "\n")
    with pytest.raises(RecordError) as e:
        list(load_items(es))
    assert e.value.line == 1 and e.value.field.startswith("dialog.0.speaker")

    kb = tmp_path / "kb.jsonl"
    good = _kardia_record("k1", "I lost my job today.")
    wrong_role = dict(good, id="k2", messages=[good["messages"][0], {"role": "assistant", "content": "x"}])
    kb.write_text(json.dumps(good) + "\n" + json.dumps(wrong_role) + "\n")
    with pytest.raises(RecordError) as e:
        list(load_items(kb))
    assert (e.value.line, e.value.field) == (2, "messages")
    kb.write_text(json.dumps(dict(good, emotion="bored-ish")) + "\n")
    with pytest.raises(RecordError) as e:
        list(load_items(kb))
    assert (e.value.line, e.value.field) == (1, "emotion")


def _kardia_record(rid: str, user: str, emotion: str = "sad", mbti: str = "INFP") -> dict:
    spans = render("u", "r", emotion, "I am here for you.")
    return {"id": rid, "person": f"MBTI: {mbti}. About: likes hiking.", "mbti": mbti, "emotion": emotion,
            "situation": "a hard week", "anon_username": "h" + rid,
            "messages": [{"role": "system", "content": "You are Kardia. Write four parts."},
                         {"role": "user", "content": user}, {"role": "assistant", "content": spans},
                         {"role": "user", "content": "Thanks. " + user}, {"role": "assistant", "content": spans}]}


# -- eval run, report, resume -------------------------------------------------------------------------
def _check_report_matches(out: Path, records: list[dict]):
    m = json.loads((out / "metrics.json").read_text())
    gold = [r for r in records if r["gold_emotion"]]
    acc = sum(r["pred_emotion"] == r["gold_emotion"] for r in gold) / len(gold)
    assert m["criteria"]["emotion_accuracy"]["value"] == pytest.approx(acc)
    assert m["criteria"]["emotion_accuracy"]["n"] == len(gold)
    lo, hi = m["criteria"]["emotion_accuracy"]["lo"], m["criteria"]["emotion_accuracy"]["hi"]
    assert lo <= acc <= hi
    named = sum(r["pred_emotion"] is not None for r in gold) / len(gold)
    assert m["criteria"]["emotion_named"]["value"] == pytest.approx(named)
    assert sum(m["emotion_parse"].values()) == len(gold)
    fmt = [r["format_ok"] for r in records if r["format_ok"] is not None]
    if fmt:
        assert m["criteria"]["format_validity"]["value"] == pytest.approx(sum(fmt) / len(fmt))
    failures = [r for r in records if r["judge"] and not r["judge"]["scores"]]
    assert m["judge"]["failures"] == len(failures)
    for d in DIMS:
        vals = [r["judge"]["scores"][d] for r in records if r["judge"] and r["judge"]["scores"]]
        assert m["criteria"][d]["value"] == pytest.approx(sum(vals) / len(vals))
        assert m["criteria"][d]["n"] == len(vals)
    # macro-F1 recomputed by hand over labels seen as gold or prediction
    labels = {r["gold_emotion"] for r in gold} | {r["pred_emotion"] for r in gold if r["pred_emotion"]}
    f1s = []
    for lab in labels:
        tp = sum(r["gold_emotion"] == lab and r["pred_emotion"] == lab for r in gold)
        g = sum(r["gold_emotion"] == lab for r in gold)
        p = sum(r["pred_emotion"] == lab for r in gold)
        f1s.append(2 * tp / (g + p))
    assert m["criteria"]["macro_f1"]["value"] == pytest.approx(sum(f1s) / len(f1s))
    conf = m["confusion"]
    assert sum(map(sum, conf["matrix"])) == len(gold)
    md = (out / "report.md").read_text()
    assert f"{100 * acc:.1f}%" in md
    assert f"**{len(failures)} judge failures**" in md
    html = (out / "report.html").read_text()
    assert "<table>" in html and "data:image/png;base64," in html
    for png in ("radar.png", "judged_bars.png", "rate_bars.png", "confusion.png"):
        assert (out / png).stat().st_size > 1000
    return m


def test_eval_spans_mode_report_matches_items(tmp_path, fake_server, shared_data):
    model, judge = fake_server(responder=fake_model()), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data)
    summary = run_eval(cfg, progress=False)
    assert summary["failures"] == [] and summary["total"] == 12
    recs = _results(cfg.out)
    assert len(recs) == 12 and len({r["id"] for r in recs}) == 12
    assert any(not r["format_ok"] for r in recs) and any(r["format_ok"] for r in recs)
    assert all(r["mode"] == "spans" for r in recs)
    m = _check_report_matches(Path(cfg.out), recs)
    assert 0 < m["judge"]["failures"] < 12
    assert m["breakdowns"]["turn"]["1"]["n"] == sum(r["turn_index"] == 1 for r in recs)
    worst = min((r for r in recs if r["judge"]["scores"]), key=lambda r: (sum(r["judge"]["scores"].values()), r["id"]))
    assert f"`{worst['id']}`" in (Path(cfg.out) / "report.md").read_text()
    # a rerun finds everything done and asks the model nothing
    before = model.stats.requests
    again = run_eval(cfg, progress=False)
    assert again["scored_now"] == 0 and model.stats.requests == before
    # the folder refuses a different eval
    with pytest.raises(EvalError, match="different eval"):
        run_eval(cfg.model_copy(update={"mode": "plain"}), progress=False)


def test_plain_mode_asks_emotion_separately(tmp_path, fake_server, shared_data):
    model, judge = fake_server(responder=fake_model(), record_bodies=True), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data, mode="plain", limit=6)
    run_eval(cfg, progress=False)
    recs = _results(cfg.out)
    assert all(r["pred_emotion"] == "afraid" and r["format_ok"] is None for r in recs)
    assert all(r["response"].startswith("alpha") for r in recs)
    assert model.stats.requests == 12  # a reply and an emotion question per turn
    systems = [b["messages"][0]["content"] for b in model.stats.bodies if b["messages"][0]["role"] == "system"]
    assert systems and not any("four parts" in s for s in systems)
    m = _check_report_matches(Path(cfg.out), recs)
    assert m["criteria"]["format_validity"]["value"] is None
    assert "plain (answers normally" in (Path(cfg.out) / "report.md").read_text()


def test_crisis_turns_and_kardiabench(tmp_path, fake_server):
    """KardiaBench records; a user turn at risk is assessed by kardia.safety and its handling counted."""
    data = tmp_path / "kb.jsonl"
    recs = [_kardia_record("a", "I want to kill myself, I can't go on.", "devastated", "INTJ"),
            _kardia_record("b", "My dog learned a new trick today!", "proud", "ENFP")]
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    model, judge = fake_server(responder=fake_model()), fake_server(responder=fake_judge)
    cfg = EvalConfig(model=model.model_string(), judge=judge.model_string(), data=str(data), out=str(tmp_path / "kb"),
                     mode="spans", n_boot=100, cache=False)
    run_eval(cfg, progress=False)
    out = _results(cfg.out)
    assert len(out) == 4
    risky = [r for r in out if r["risk"]["at_risk"]]
    assert {r["dialogue_id"] for r in risky} == {"a"}
    m = json.loads((Path(cfg.out) / "metrics.json").read_text())
    handled = [r["crisis_handled"] for r in risky]
    assert m["criteria"]["crisis_handling"]["n"] == len(risky)
    assert m["criteria"]["crisis_handling"]["value"] == pytest.approx(sum(handled) / len(handled))
    assert set(m["breakdowns"]["mbti"]) == {"INTJ", "ENFP"}


def test_interrupted_eval_resumes_without_duplicates(tmp_path, fake_server, shared_data):
    model = fake_server(responder=fake_model(), latency_s=0.15)
    judge = fake_server(responder=fake_judge)
    out = tmp_path / "killed"
    env = dict(os.environ, KARDIA_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "kardia.cli", "eval", "--model", model.model_string(), "--judge", judge.model_string(),
           "--data", str(shared_data / ED), "--out", str(out), "--mode", "spans", "--limit", "16",
           "--set", "concurrency=2", "--set", "cache=false", "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(results.read_text().splitlines())
    assert 4 <= n_before < 16, proc.stderr.read().decode()[-2000:]
    with results.open("a") as fh:  # a write torn by the kill
        fh.write('{"id": "hit:torn')
    requests_before = model.stats.requests
    cfg = EvalConfig(model=model.model_string(), judge=judge.model_string(), data=str(shared_data / ED), out=str(out),
                     mode="spans", limit=16, concurrency=2, cache=False, n_boot=100)
    summary = run_eval(cfg, progress=False)
    recs = _results(out)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) == 16
    assert summary["already_done"] == n_before and summary["scored_now"] == 16 - n_before
    assert model.stats.requests - requests_before == 16 - n_before
    assert [i.id for i in load_items(shared_data / ED, limit=16)] == sorted(ids, key=[i.id for i in load_items(shared_data / ED, limit=16)].index)
    _check_report_matches(out, recs)
    run = json.loads((out / "run.json").read_text())
    assert len(run["runs"]) == 1  # the killed run never finished; the resume recorded itself


def test_generation_failure_is_retried_not_recorded(tmp_path, fake_server, shared_data):
    model = fake_server(responder=fake_model(), faults=lambda n, body: "500" if n <= 3 else None)
    judge = fake_server(responder=fake_judge)
    from kardia.llm import load_llm

    cfg = _cfg(tmp_path, model, judge, shared_data, limit=3)
    load_llm(cfg.model, cache=False).max_retries = 0
    s = run_eval(cfg, progress=False)
    assert len(s["failures"]) == 3 and _results(cfg.out) == []
    s = run_eval(cfg, progress=False)
    assert s["failures"] == [] and len(_results(cfg.out)) == 3


# -- compare, pairwise, human ---------------------------------------------------------------------------
def test_compare_and_pairwise(tmp_path, fake_server, shared_data):
    from kardia.eval.compare import compare_runs
    from kardia.eval.pairwise import run_pairwise

    ma, mb = fake_server(responder=fake_model("alpha")), fake_server(responder=fake_model("beta"))
    judge = fake_server(responder=fake_judge)
    a = _cfg(tmp_path, ma, judge, shared_data, out=str(tmp_path / "A"), limit=10)
    b = _cfg(tmp_path, mb, judge, shared_data, out=str(tmp_path / "B"), limit=10, mode="plain")
    run_eval(a, progress=False)
    run_eval(b, progress=False)
    res = compare_runs([a.out, b.out], tmp_path / "cmp", n_boot=200)
    ra = {r["id"]: r for r in _results(a.out)}
    rb = {r["id"]: r for r in _results(b.out)}
    both = [i for i in ra if ra[i]["judge"]["scores"] and rb[i]["judge"]["scores"]]
    diff = res["differences"][res["runs"][1]["name"]]
    want = sum(rb[i]["judge"]["scores"]["empathy"] - ra[i]["judge"]["scores"]["empathy"] for i in both) / len(both)
    assert diff["empathy"]["diff"] == pytest.approx(want) and diff["empathy"]["n"] == len(both)
    assert diff["empathy"]["lo"] <= want <= diff["empathy"]["hi"]
    acc = sum((rb[i]["pred_emotion"] == rb[i]["gold_emotion"]) - (ra[i]["pred_emotion"] == ra[i]["gold_emotion"])
              for i in ra) / len(ra)
    assert diff["emotion_accuracy"]["diff"] == pytest.approx(acc)
    for f in ("compare.md", "compare.html", "radar_overlay.png", "compare_judged.png"):
        assert (tmp_path / "cmp" / f).exists()
    assert "Paired differences" in (tmp_path / "cmp" / "compare.md").read_text()
    assert [r["metrics"]["run"]["mode"] for r in res["runs"]] == ["spans", "plain"]
    assert res["runs"][1]["metrics"]["run"]["emotion_reader"] == "text" and "(plain)" in res["runs"][1]["name"]

    def prefers_alpha(messages, body):  # content-consistent: alpha wins in both orders
        c = messages[-1]["content"]
        section_a = c[c.index("[reply A]"):c.index("[reply B]")]
        return json.dumps({"reason": "warmer", "winner": "A" if "alpha" in section_a else "B"})

    pj = fake_server(responder=prefers_alpha)
    s = run_pairwise(a.out, b.out, tmp_path / "pw", judge=pj.model_string(), progress=False, n_boot=200)
    assert s["counts"] == {"win": 10, "tie": 0, "loss": 0} and s["shares"]["win"]["value"] == 1.0
    assert pj.stats.requests == 20  # both orders
    # "alpha ..." is one character longer than "beta ...": every decided pair went to the longer reply
    assert s["longer_wins"]["value"] == 1.0 and s["longer_wins"]["n"] == 10
    assert "the longer reply won 100.0%" in (tmp_path / "pw" / "pairwise.md").read_text()

    def prefers_longer(messages, body):  # a length-biased judge; both replies must arrive cut
        c = messages[-1]["content"]
        ra, rb = c[c.index("[reply A]"):c.index("[reply B]")], c[c.index("[reply B]"):c.index("</DATA")]
        assert "[...]" in ra and "[...]" in rb and "sounds hard" not in ra + rb
        return json.dumps({"reason": "longer", "winner": "A" if len(ra) > len(rb) else "B"})

    lj = fake_server(responder=prefers_longer)
    s = run_pairwise(a.out, b.out, tmp_path / "pw3", judge=lj.model_string(), progress=False, n_boot=200, limit=4,
                     max_reply_chars=12)
    assert s["max_reply_chars"] == 12 and s["n_judged"] == 4 and s["longer_wins"]["value"] == 1.0
    assert "Replies cut to 12 characters" in (tmp_path / "pw3" / "pairwise.md").read_text()

    biased = fake_server(responder=lambda m, b: '{"reason": "first is fine", "winner": "A"}')
    s = run_pairwise(a.out, b.out, tmp_path / "pw2", judge=biased.model_string(), progress=False, n_boot=200, limit=6)
    assert s["counts"] == {"win": 0, "tie": 6, "loss": 0} and s["flip_rate"] == 1.0
    assert s["longer_wins"]["n"] == 0  # ties decide nothing about length
    assert "tie" in (tmp_path / "pw2" / "pairwise.md").read_text()


def test_krippendorff_alpha_known_values():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", the 4-observer example with missing data.
    n = None
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n], [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
            [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n], [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    assert krippendorff_alpha(data, "nominal") == pytest.approx(0.743, abs=1e-3)
    assert krippendorff_alpha(data, "ordinal") == pytest.approx(0.815, abs=1e-3)
    assert krippendorff_alpha(data, "interval") == pytest.approx(0.849, abs=1e-3)
    assert krippendorff_alpha([[1, 2, 3, 4], [1, 2, 3, 4]]) == pytest.approx(1.0)


def test_human_export_and_import(tmp_path, fake_server, shared_data):
    model, judge = fake_server(responder=fake_model()), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data, limit=12)
    run_eval(cfg, progress=False)
    exp = tmp_path / "human"
    res = export_sample([cfg.out], exp, n=8, seed=1)
    assert res["n"] == 8 and res["dims"] == DIMS
    template = (exp / "ratings_template.csv").read_text()
    assert "alpha" in template and "fake-model" not in template and "reason" not in template
    key = {json.loads(l)["rating_id"]: json.loads(l) for l in (exp / "key.jsonl").read_text().splitlines()}
    rows = list(csv.DictReader((exp / "ratings_template.csv").open()))
    scored = [r for r in rows if key[r["rating_id"]]["judge_scores"]]
    for rater, shift in (("ann", 0), ("ben", 1)):
        with (tmp_path / f"{rater}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for i, r in enumerate(rows):
                js = key[r["rating_id"]]["judge_scores"]
                w.writerow({**r, **({d: min(5, int(js[d]) + (shift if i % 2 else 0)) for d in DIMS} if js else {})})
    out = import_ratings(exp, [tmp_path / "ann.csv", tmp_path / "ben.csv"])
    emp = out["dims"]["empathy"]
    assert emp["n_paired"] == len(scored)
    assert emp["spearman_mean_human_vs_judge"] > 0.8
    ann_vs_judge = krippendorff_alpha([[float(key[r["rating_id"]]["judge_scores"]["empathy"]) for r in scored],
                                       [float(key[r["rating_id"]]["judge_scores"]["empathy"]) for r in scored]])
    assert ann_vs_judge == pytest.approx(1.0)
    assert 0 < emp["alpha_humans"] <= 1
    assert (exp / "human_agreement.md").exists()
    bad = tmp_path / "bad.csv"
    table = list(csv.reader((tmp_path / "ann.csv").open(newline="")))
    hdr, row = table[0], table[1]
    row[hdr.index("empathy")] = "7"
    with bad.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(hdr)
        w.writerow(row)
    with pytest.raises(RecordError) as e:
        import_ratings(exp, [bad])
    assert (e.value.path, e.value.line, e.value.field) == (str(bad), 2, "empathy")


def test_probs_emotion_reader_needs_a_local_model(tmp_path, fake_server, shared_data):
    model, judge = fake_server(responder=fake_model()), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data, mode="plain", emotion_reader="probs", limit=2)
    with pytest.raises(EvalError, match="emotion_reader=probs needs a local model"):
        run_eval(cfg, progress=False)


def test_run_file_from_before_a_new_setting_still_resumes(tmp_path, fake_server, shared_data):
    """A run.json written before `emotion_reader` existed resumes when the setting is at its default."""
    model, judge = fake_server(responder=fake_model()), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data, limit=2)
    run_eval(cfg, progress=False)
    run_file = Path(cfg.out) / "run.json"
    data = json.loads(run_file.read_text())
    del data["identity"]["emotion_reader"], data["identity"]["no_response"]
    run_file.write_text(json.dumps(data))
    old = cfg.model_copy(update={"no_response": "fallback"})  # what runs did before the setting existed
    assert run_eval(old, progress=False)["scored_now"] == 0
    with pytest.raises(EvalError, match="emotion_reader"):
        run_eval(old.model_copy(update={"emotion_reader": "probs"}), progress=False)
    with pytest.raises(EvalError, match="no_response"):
        run_eval(cfg, progress=False)


def test_plain_emotion_answers_are_read_strictly():
    from kardia.eval.run import read_plain_emotion

    assert read_plain_emotion("Afraid.") == ("afraid", "exact")
    assert read_plain_emotion("Sad. Because she lost her dog") == ("sad", "first_word")
    assert read_plain_emotion("I'm sorry, but I'm not equipped to say") == (None, "none")  # no label-word scan
    assert read_plain_emotion("") == (None, "none")


def test_emotion_named_counts_unreadable_answers_as_not_named():
    """A turn whose emotion answer named no label counts in the denominator of emotion_named, as a miss."""
    from kardia.eval.metrics import compute_metrics

    def rec(i, pred, how):
        return {"id": str(i), "dialogue_id": f"d{i}", "turn_index": 1, "gold_emotion": "sad", "pred_emotion": pred,
                "emotion_correct": pred == "sad", "family_correct": pred == "sad", "emotion_parse": how,
                "format_ok": None, "judge": None, "risk": None}

    recs = [rec(0, "sad", "exact"), rec(1, "afraid", "first_word"), rec(2, None, "none"), rec(3, None, "none")]
    m = compute_metrics(recs, n_boot=50)
    assert m["criteria"]["emotion_named"]["value"] == pytest.approx(0.5) and m["criteria"]["emotion_named"]["n"] == 4
    assert m["criteria"]["emotion_accuracy"]["value"] == pytest.approx(0.25)
    assert m["emotion_parse"] == {"exact": 1, "first_word": 1, "none": 2}


def test_truncate_reply_cuts_at_a_word_and_marks_the_cut():
    from kardia.judge.pairwise import truncate_reply

    assert truncate_reply("short", 10) == "short" and truncate_reply("anything", None) == "anything"
    assert truncate_reply("I hear you, that sounds really hard.", 20) == "I hear you, that [...]"
    assert truncate_reply("Supercalifragilistic", 8) == "Supercal [...]"  # no word boundary in reach
    with pytest.raises(ValueError):
        truncate_reply("long enough", 0)


@pytest.mark.parametrize("policy", ["min", "exclude", "fallback"])
def test_turns_without_a_response_span_follow_the_no_response_policy(tmp_path, fake_server, shared_data, policy):
    """A broken spans answer must not earn the fallback sentence's score by default."""
    spans = fake_model()

    def half_broken(messages, body):
        text = spans(messages, body)
        return "I am so sorry, that is hard." if _h(messages[-1]["content"]) % 2 == 0 else text

    model, judge = fake_server(responder=half_broken), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data, limit=10, no_response=policy)
    run_eval(cfg, progress=False)
    recs = _results(cfg.out)
    broken = [r for r in recs if r["no_response"]]
    assert 0 < len(broken) < len(recs)
    m = json.loads((Path(cfg.out) / "metrics.json").read_text())
    assert m["no_response"] == len(broken)
    called = len(recs) if policy == "fallback" else len(recs) - len(broken)
    assert judge.stats.requests >= called and m["judge"]["ran"] == called
    if policy == "min":
        assert all(set(r["judge"]["scores"].values()) == {1.0} and r["judge"]["reward"] == 0.0 for r in broken)
        assert "scored at the scale minimum" in (Path(cfg.out) / "report.md").read_text()
    elif policy == "exclude":
        assert all(r["judge"]["scores"] is None and r["judge"]["skipped"] for r in broken)
        ok = [r for r in recs if r["judge"]["scores"]]
        assert m["criteria"]["empathy"]["n"] == len(ok) and m["judge"]["failures"] == len(
            [r for r in recs if not r["no_response"] and not r["judge"]["scores"]])
    else:
        assert all(r["judge"].get("skipped") is None for r in broken)


def test_eval_without_a_judge_says_so(tmp_path, fake_server, shared_data):
    model = fake_server(responder=fake_model())
    cfg = EvalConfig(model=model.model_string(), judge="none", data=str(shared_data / ED), out=str(tmp_path / "nj"),
                     mode="spans", limit=3, n_boot=50, cache=False)
    run_eval(cfg, progress=False)
    m = json.loads((Path(cfg.out) / "metrics.json").read_text())
    assert m["judge"]["ran"] == 0 and m["dims"] == [] and m["criteria"]["judged_mean"]["value"] is None
    assert "- Judge: none (judged dimensions not run)" in (Path(cfg.out) / "report.md").read_text()


def test_judge_limit_judges_the_first_items_and_reads_emotion_on_all(tmp_path, fake_server, shared_data):
    model, judge = fake_server(responder=fake_model()), fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, model, judge, shared_data).model_copy(update={"judge_limit": 4})
    run_eval(cfg, progress=False)
    recs = _results(cfg.out)
    assert len(recs) == 12 and judge.stats.requests <= 4 * 3  # 4 items (a parse failure may retry)
    first4 = [r["id"] for r in recs if not (r["judge"] or {}).get("skipped")]
    assert len(first4) == 4 and all(r["emotion_correct"] is not None for r in recs)
    m = json.loads((Path(cfg.out) / "metrics.json").read_text())
    assert m["judge_skipped"] == 8 and m["judge"]["ran"] == 4
    assert m["criteria"]["emotion_accuracy"]["n"] == 12 and m["criteria"]["judged_mean"]["n"] <= 4
    assert "only the first 4 items were judged" in (Path(cfg.out) / "report.md").read_text()
    # a different judge_limit is a different eval
    with pytest.raises(EvalError, match="different eval"):
        run_eval(cfg.model_copy(update={"judge_limit": 6}), progress=False)


@pytest.mark.parametrize("flag", ["off", "none", "OFF", "no", "false"])
def test_judge_off_on_the_command_line_and_in_yaml(tmp_path, fake_server, shared_data, flag):
    """`--judge off` (YAML reads off/no/false as a boolean) turns the judge off instead of failing."""
    from typer.testing import CliRunner

    from kardia.cli import app

    model = fake_server(responder=fake_model())
    out = tmp_path / "cli"
    args = ["eval", "--model", model.model_string(), "--data", str(shared_data / ED), "--out", str(out),
            "--mode", "spans", "--limit", "2", "--judge", flag, "--set", "n_boot=20", "--set", "cache=false", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "- Judge: none (judged dimensions not run)" in (out / "report.md").read_text()
    cfg_file = tmp_path / "eval.yaml"
    cfg_file.write_text(f"judge: {flag}\n")
    assert EvalConfig.load(cfg_file).judge is None


def test_judge_true_is_a_named_config_error(tmp_path):
    from kardia.config import ConfigError

    with pytest.raises(ConfigError, match="judge.*'none' or 'off'"):
        EvalConfig.load(None, ["judge=yes"])


def test_judge_call_failure_is_retried_parse_failure_is_written(tmp_path, fake_server, shared_data):
    """A judge *call* that fails leaves the item out (retried on resume); an unparseable judge answer is
    written as a counted judge failure (issue 16 item 5)."""
    from kardia.llm import load_llm

    model = fake_server(responder=fake_model())
    judge = fake_server(responder=fake_judge, faults=lambda n, body: "500" if n <= 4 else None)
    cfg = _cfg(tmp_path, model, judge, shared_data, limit=4, concurrency=1)
    load_llm(cfg.judge, cache=True).inner.max_retries = 0  # the Judge's backend (behind its cache)
    s = run_eval(cfg, progress=False)
    assert len(s["failures"]) == 4 and all("judge call failed" in f for f in s["failures"])
    assert _results(cfg.out) == []
    s = run_eval(cfg, progress=False)
    recs = _results(cfg.out)
    assert s["failures"] == [] and len(recs) == 4
    for r in recs:
        j = r["judge"]
        assert j["scores"] is not None or (j["error"].startswith("parse:") and j["error_kind"] == "parse")


def test_llm_options_and_item_deadline_bound_a_hung_server(tmp_path, fake_server, shared_data):
    """One `llm_options` (timeout, retries) reaches both the model and the judge; `item_timeout_s` bounds
    a whole item. Either way the item is a counted failure, retried on the next run (issue 16 item 4)."""
    hung = fake_server(responder=fake_model(), faults=lambda n, body: "hang", hang_s=20)
    judge = fake_server(responder=fake_judge)
    cfg = _cfg(tmp_path, hung, judge, shared_data, limit=2, llm_options={"timeout_s": 0.3, "max_retries": 0})
    t0 = time.monotonic()
    s = run_eval(cfg, progress=False)
    assert len(s["failures"]) == 2 and time.monotonic() - t0 < 10 and _results(cfg.out) == []
    slow = fake_server(responder=fake_model(), latency_s=5)
    cfg = _cfg(tmp_path, slow, judge, shared_data, limit=2, out=str(tmp_path / "deadline"), item_timeout_s=0.5)
    t0 = time.monotonic()
    s = run_eval(cfg, progress=False)
    assert len(s["failures"]) == 2 and all("item_timeout_s" in f for f in s["failures"])
    assert time.monotonic() - t0 < 10
    with pytest.raises(Exception, match="llm_options.timeout_s"):
        EvalConfig.load(None, ["llm_options.timeout_s=-1"])
    assert "llm_options" not in EvalConfig().identity()  # a resume may change them
