"""`kardia build` end to end against the FAKE OpenAI-compatible server (real HTTP on 127.0.0.1, the
official openai client, scripted U/A/R answers from `kardia.testing.fake_roles`): resume after kill -9,
anonymisation, shards + merge, failing roles, unparseable critics, the CLI's dry run and errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kardia.data.config import BuildConfig
from kardia.data.engine import BuildError, merge, run_build
from kardia.testing.fake_roles import scripted_responder
from kardia.dataset import DialogueRecord
from kardia.spans import parse

REPO = Path(__file__).resolve().parent.parent


def _cfg_dict(model: str, **extra) -> dict:
    d = {
        "profiles": [{"kind": "person", "path": "kardia:samples/profiles.jsonl"}],
        "seeds": [{"kind": "jsonl", "path": "kardia:samples/situations.jsonl"}],
        "dialogues_per_profile": 2,
        "max_profiles": 8,  # 16 dialogues: the counts below
        "models": {"user": model, "responder": model, "critic": model},
        "max_exchanges": 3,
        "max_revisions": 2,
        "llm_cache": False,
        "concurrency": 4,
        "anonymise": {"salt": "test-salt"},
        "split": {"test_fraction": 0.25},
        "export": {"hf": False, "plot": False},
    }
    d.update(extra)
    return d


def _cfg(model: str, **extra) -> BuildConfig:
    return BuildConfig.model_validate(_cfg_dict(model, **extra))


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_build_outputs_valid_split_dataset_with_card(fake_server, tmp_path):
    srv = fake_server(responder=scripted_responder())
    cfg = _cfg(srv.model_string(), export={"hf": True, "plot": True})
    res = run_build(cfg, tmp_path, progress=False)
    gen, ds = res["generation"], res["dataset"]
    assert gen["written"] == 16 and gen["failed"] == 0
    recs = _lines(tmp_path / "dialogues.jsonl")
    assert len(recs) == ds["kept"] > 0 and ds["generated"] == 16
    for r in recs:
        rec = DialogueRecord.model_validate(r)
        for _, content in rec.assistant_turns():
            assert parse(content).ok
        assert rec.meta.split in ("train", "test") and rec.meta.difficulty in ("easy", "hard")
        assert sum(rec.meta.verdict_counts.values()) >= rec.meta.exchanges
    train = {r["meta"]["profile_id"] for r in _lines(tmp_path / "train.jsonl")}
    test = {r["meta"]["profile_id"] for r in _lines(tmp_path / "test.jsonl")}
    assert train and test and not train & test  # profile-disjoint
    # every draft and critique of every dialogue is in the trace
    trace = _lines(tmp_path / "trace.jsonl")
    drafts = [e for e in trace if e["kind"] == "draft"]
    crits = [e for e in trace if e["kind"] == "critique"]
    assert len(drafts) == len(crits) and {e["verdict"] for e in crits} <= {"FAIL", "PASS", "SOLVED"}
    assert sum(r["meta"]["revisions"] for r in recs) <= sum(1 for e in crits if e["verdict"] == "FAIL")
    card = (tmp_path / "README.md").read_text()
    assert "| Dialogues |" in card and "Avg. reasoning length" in card and "emotion_histogram.png" in card
    assert (tmp_path / "emotion_histogram.png").stat().st_size > 1000
    from datasets import load_from_disk

    dd = load_from_disk(str(tmp_path / "hf"))
    assert dd["train"].num_rows + dd["test"].num_rows == len(recs)
    assert set(dd["train"].column_names) == {"id", "person", "mbti", "emotion", "situation", "anon_username", "messages", "meta"}
    # re-split without regenerating: a different fraction moves whole profiles only
    from typer.testing import CliRunner

    from kardia.cli import app

    r = CliRunner().invoke(app, ["data", "split", str(tmp_path), "--test-fraction", "0.5", "--seed", "1"])
    assert r.exit_code == 0, r.output
    test2 = {x["meta"]["profile_id"] for x in _lines(tmp_path / "test.jsonl")}
    train2 = {x["meta"]["profile_id"] for x in _lines(tmp_path / "train.jsonl")}
    assert len(test2) == 4 and not test2 & train2


def test_pii_seeded_into_profiles_never_reaches_output(fake_server, tmp_path):
    secrets_ = ["maya.r@example.com", "+1 415 555 0199", "@maya_writes", "https://maya.blog/poems", "(212) 555-0134"]
    prof = tmp_path / "p.jsonl"
    with prof.open("w") as fh:
        for i, s in enumerate(secrets_):
            person = f"MBTI: INFP\nAbout: contact me at {s} any time\nSignature: {s}\nRecent Activities: posted {s}"
            fh.write(json.dumps({"id": f"pii{i}", "username": f"maya{i}", "person": person}) + "\n")
    srv = fake_server(responder=scripted_responder(echo_profile=True), record_bodies=True)
    cfg = _cfg(srv.model_string(), profiles=[{"kind": "person", "path": str(prof)}], dedup={"method": "none"}, filters={"emotion_jumps": False})
    run_build(cfg, tmp_path / "out", progress=False)
    for name in ("dialogues.jsonl", "trace.jsonl", "train.jsonl", "test.jsonl"):
        text = (tmp_path / "out" / name).read_text()
        for s in secrets_ + ["maya0", "555", "maya.blog", "maya_writes"]:
            assert s not in text, (name, s)
    text = (tmp_path / "out" / "dialogues.jsonl").read_text()
    assert "[email]" in text and "[phone]" in text and "[handle]" in text and "[url]" in text
    # the fake user simulator echoes its profile: nothing reached the models either
    bodies = json.dumps(srv.stats.bodies)
    assert srv.stats.bodies and "About: contact me at [email]" in bodies
    assert not any(s in bodies for s in secrets_)


def test_seeded_pii_of_every_kind_leaks_nowhere(fake_server, tmp_path):
    """E-mails, phones, URLs, handles, street addresses and the profile's own username, seeded into
    profiles: 0 of them in any model prompt or any exported file, the HF folder included (issue 16)."""
    addresses = ["221B Baker Street", "1600 Pennsylvania Ave NW", "12 rue de la Paix", "Hauptstraße 12"]
    contacts = ["maya.r@example.com", "+1 415 555 0199", "@maya_writes", "https://maya.blog/poems"]
    usernames = ["quietfox77", "Lune.Blanche", "kai_the_owl", "Tobi-K"]
    prof = tmp_path / "p.jsonl"
    with prof.open("w") as fh:
        for i, (addr, contact, user) in enumerate(zip(addresses, contacts, usernames)):
            person = (f"MBTI: INFP\nAbout: {user} here, I live at {addr}; reach me via {contact}\n"
                      f"Signature: -- {user}\nRecent Activities: moved to {addr}")
            fh.write(json.dumps({"id": f"pii{i}", "username": user, "person": person}) + "\n")
    srv = fake_server(responder=scripted_responder(echo_profile=True), record_bodies=True)
    cfg = _cfg(srv.model_string(), profiles=[{"kind": "person", "path": str(prof)}], dedup={"method": "none"},
               filters={"emotion_jumps": False}, export={"hf": True, "plot": False})
    run_build(cfg, tmp_path / "out", progress=False)
    secrets_ = addresses + contacts + usernames + ["Baker", "Pennsylvania", "rue de la Paix", "Hauptstraße", "555 0199"]
    files = [f for f in (tmp_path / "out").rglob("*") if f.is_file() and f.name != "salt"]
    assert any(f.parent.name in ("train", "test") for f in files)  # the HF folder is among them
    for f in files:
        data = f.read_bytes()
        for s in secrets_:
            assert s.encode("utf-8") not in data and s.lower().encode() not in data.lower(), (f, s)
    bodies = json.dumps(srv.stats.bodies, ensure_ascii=False)
    assert srv.stats.bodies and "[address]" in bodies and "[username]" in bodies
    leaks = [s for s in secrets_ if s.lower() in bodies.lower()]
    assert leaks == []


def _run_cli(cfg_path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "KARDIA_HOME": str(out.parent / "home")}
    return subprocess.Popen(
        [sys.executable, "-m", "kardia.cli", "build", "-c", str(cfg_path), "--out", str(out), "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def test_kill9_at_random_moments_then_resume_equals_uninterrupted(fake_server, tmp_path):
    srv = fake_server(responder=scripted_responder(), latency_s=0.01)
    d = _cfg_dict(srv.model_string(), dialogues_per_profile=3, concurrency=3)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    ref = tmp_path / "ref"
    assert _run_cli(cfg_path, ref).wait(timeout=120) == 0
    out = tmp_path / "killed"
    gen = out / "work" / "generated.jsonl"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    kills = 0
    for _ in range(3):
        target = rng.randint(1, 18)  # kill once this many dialogues are on disk, plus a random delay
        proc = _run_cli(cfg_path, out)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            n = gen.read_bytes().count(b"\n") if gen.exists() else 0
            if n >= target:
                time.sleep(rng.uniform(0, 0.3))
                break
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 1
    # a torn last line, as a kill in the middle of a write would leave
    with gen.open("ab") as fh:
        fh.write(b'{"id": "kb-torn", "record": {"id": "kb-to')
    proc = _run_cli(cfg_path, out)
    log = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, log[-2000:]
    ids = [json.loads(x)["id"] for x in gen.read_text().splitlines()]
    ref_ids = [json.loads(x)["id"] for x in (ref / "work" / "generated.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24  # nothing duplicated, nothing lost, the torn line gone
    assert set(ids) == set(ref_ids)
    # the published dataset is the same, record for record
    assert (out / "dialogues.jsonl").read_text() == (ref / "dialogues.jsonl").read_text()


def test_shards_then_merge_equal_one_run(fake_server, tmp_path):
    srv = fake_server(responder=scripted_responder())
    cfg = _cfg(srv.model_string())
    whole = run_build(cfg, tmp_path / "whole", progress=False)
    for i in range(3):
        r = run_build(cfg, tmp_path / f"s{i}", shard_spec=(i, 3), progress=False)
        assert "dataset" not in r
    res = merge([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged")
    assert res["merged"] == whole["generation"]["written"]
    assert (tmp_path / "merged" / "dialogues.jsonl").read_text() == (tmp_path / "whole" / "dialogues.jsonl").read_text()
    with pytest.raises(BuildError, match="salt"):
        run_build(_cfg(srv.model_string(), anonymise={"salt": None}), tmp_path / "nosalt", shard_spec=(0, 2), progress=False)


def test_failing_role_stops_run_with_clear_error(fake_server, tmp_path):
    good = scripted_responder()

    def responder(messages, body):  # the critic's model answers, the user simulator's is down
        return good(messages, body)

    srv = fake_server(responder=responder, faults=lambda n, body: "500" if "role-playing" in json.dumps(body) else None)
    cfg = _cfg(srv.model_string(), max_role_failures=2, llm_options={"max_retries": 0})
    with pytest.raises(BuildError, match=r"role user \(model 'openai:fake-model@.*'\) failed \d+ times in a row; last error: .*500"):
        run_build(cfg, tmp_path, progress=False)
    assert not (tmp_path / "dialogues.jsonl").exists()


def test_unparseable_critic_is_counted_and_revised(fake_server, tmp_path):
    base = scripted_responder()

    def responder(messages, body):
        text = "\n".join(str(m.get("content", "")) for m in messages)
        if "quality critic" in text:
            return "I think it is fine overall."  # no verdict anywhere
        return base(messages, body)

    srv = fake_server(responder=responder)
    cfg = _cfg(srv.model_string(), max_exchanges=2, max_revisions=1, dialogues_per_profile=1, max_profiles=2)
    res = run_build(cfg, tmp_path, progress=False)
    assert res["generation"]["critic_unparsed"] == 2 * 2 * 2  # dialogues x exchanges x (1 + revisions)
    recs = _lines(tmp_path / "dialogues.jsonl")
    assert recs and all(r["meta"]["critic_unparsed"] == 4 and r["meta"]["revisions"] == 2 for r in recs)
    assert all(r["meta"]["difficulty"] is None for r in recs)  # no verdict: no difficulty, never a guess
    assert res["dataset"]["table"]["all"]["no_verdict"] == len(recs)


def test_single_mode_for_strong_models(fake_server, tmp_path):
    srv = fake_server(responder=scripted_responder(), record_bodies=True)
    cfg = _cfg(srv.model_string(), responder_mode="single", max_profiles=2, dialogues_per_profile=1)
    res = run_build(cfg, tmp_path, progress=False)
    assert res["generation"]["written"] == 2
    assert any("Write every answer as four parts" in json.dumps(b) for b in srv.stats.bodies)
    for r in _lines(tmp_path / "dialogues.jsonl"):
        assert all(parse(c).ok for _, c in DialogueRecord.model_validate(r).assistant_turns())


def test_cli_dry_run_and_bad_input(tmp_path):
    env = {**os.environ}
    cmd = [sys.executable, "-m", "kardia.cli", "build", "--out", str(tmp_path / "o"), "--dry-run", "--set", "max_profiles=8",
           "--set", "profiles=[{kind: person, path: 'kardia:samples/profiles.jsonl'}]",
           "--set", "seeds=[{kind: jsonl, path: 'kardia:samples/situations.jsonl'}]",
           "--set", "distribution=balanced", "--set", "max_exchanges=4", "--set", "max_revisions=1"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "dialogues" in r.stdout and "16" in r.stdout and "model calls, at most (total)" in r.stdout
    # 16 dialogues x 4 exchanges x (1 user + 2 drafts x (4 responder + 1 critic)) = 704
    assert "704" in r.stdout
    assert not (tmp_path / "o" / "work").exists()  # a dry run writes nothing
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"situation": "ok", "emotion": "sad"}\n{"situation": "x", "emotion": 77}\n')
    cmd2 = cmd[:-8] + ["--set", "profiles=[{kind: person, path: 'kardia:samples/profiles.jsonl'}]",
                       "--set", f"seeds=[{{kind: jsonl, path: '{bad}'}}]"]
    r = subprocess.run(cmd2, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and f"{bad}:2: field emotion: unknown label id 77" in r.stderr
    r = subprocess.run(cmd2 + ["--skip-bad"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "skipped_bad_inputs" in r.stdout
    r = subprocess.run(cmd[:-8] + ["--set", "profiles=[{kind: person, path: /nope.jsonl}]"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "/nope.jsonl: profile file not found" in r.stderr


@pytest.mark.parametrize("sampled_copies", [False, True])
def test_guided_span_that_copies_is_written_again_sampled(fake_server, tmp_path, sampled_copies):
    """A reasoning span that repeats the understanding word for word is re-asked (sampled) before the
    filter would drop the dialogue; the retry is counted, and a span that copies again is kept for
    the filter to drop, never silently accepted."""
    base = scripted_responder(fail_rate=0.0)
    und = "They feel shaken and want to be heard, and they keep thinking about what happened today."

    def respond(messages, body):
        last = str(messages[-1].get("content", ""))
        if "explain why the person feels" in last:
            if (body.get("temperature") or 0) > 0 and not sampled_copies:
                return "Because something they care about changed suddenly, calm listening and validation fit."
            return und
        if "describe what the person means" in last:
            return und
        return base(messages, body)

    srv = fake_server(responder=respond)
    cfg = _cfg(srv.model_string(), max_exchanges=1, max_revisions=0, responder_mode="guided",
               sampling={"temperature": 0.0})
    res = run_build(cfg, tmp_path, progress=False)
    gen, ds = res["generation"], res["dataset"]
    assert gen["written"] == 16 and gen["copy_retries"] == 16, gen
    if sampled_copies:
        assert ds["kept"] == 0 and ds["dropped"]["copied"] == 16, ds
    else:
        assert ds["kept"] > 0 and ds["dropped"].get("copied", 0) == 0, ds
        for r in _lines(tmp_path / "dialogues.jsonl"):
            assert parse(r["messages"][-1]["content"]).reasoning.startswith("Because something")
