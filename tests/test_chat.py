"""`kardia chat`: the real command in a subprocess, against the FAKE OpenAI server (scripted four-span
answers, real HTTP) and once against the embedded model; plus the guard integration in-process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kardia.chat import ChatConfig, ChatInputError, ChatSession, read_profile, run_chat
from kardia.llm import Completion, SamplingParams
from kardia.spans import fallback_message, render

UNDERSTANDING = "UNDERSTANDING-SECRET: they lost their dog of twelve years."
REASONING = "REASONING-SECRET: grief after a long bond needs room, not fixing."
REPLY = "I'm so sorry about your dog. Twelve years is a whole chapter of life."
FOUR_SPANS = render(UNDERSTANDING, REASONING, "devastated", REPLY)


def kardia_chat(args: list[str], lines: str, env_extra: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="250", NO_COLOR="1", TERM="dumb", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "kardia.cli", "chat", *args],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def read_transcript(path: Path) -> tuple[dict, list[dict]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["type"] == "session"
    assert all(r["type"] == "turn" for r in rows[1:])
    return rows[0], rows[1:]


@pytest.fixture()
def profile_file(tmp_path) -> Path:
    p = tmp_path / "profile.json"
    p.write_text(json.dumps({"person": "INFP. About: quiet gardener. Recent: my dog Biscuit passed.", "situation": "Lost a dog."}))
    return p


def test_chat_shows_only_the_response_span(fake_server, tmp_path, profile_file):
    server = fake_server(responder=lambda messages, body: FOUR_SPANS, record_bodies=True)
    transcript = tmp_path / "t.jsonl"
    args = ["--model", server.model_string(), "--profile", str(profile_file), "--transcript", str(transcript), "--seed", "3"]
    proc = kardia_chat(args, "My dog died yesterday.\n\nI keep looking for him.\n", {"KARDIA_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count(REPLY) == 2
    assert "SECRET" not in out and "<|" not in out and "devastated" not in out

    header, turns = read_transcript(transcript)
    assert header["model"] == server.model_string() and "quiet gardener" in header["system"] and "Lost a dog." in header["system"]
    assert header["params"]["seed"] == 3
    assert [t["user"] for t in turns] == ["My dog died yesterday.", "I keep looking for him."]
    for t in turns:
        assert t["shown"] == REPLY and t["raw"] == FOUR_SPANS and t["format_ok"] and t["problems"] == []
        assert t["spans"]["reasoning"] == REASONING and t["emotion_label"] == "devastated" and t["error"] is None
    # the second call carried the history: system, user, the four-span answer, user
    second = server.stats.bodies[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == FOUR_SPANS and second[0]["content"] == header["system"]
    assert server.stats.bodies[0]["seed"] == 3


def test_show_reasoning_prints_the_other_spans(fake_server, tmp_path):
    server = fake_server(responder=lambda messages, body: FOUR_SPANS)
    proc = kardia_chat(["--model", server.model_string(), "--show-reasoning", "--no-cache"], "hello\n/quit\nnever sent\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert UNDERSTANDING in proc.stdout and REASONING in proc.stdout and "devastated" in proc.stdout
    assert REPLY in proc.stdout
    assert server.stats.requests == 1  # /quit ended the chat


def test_broken_answer_shows_the_fallback_never_the_reasoning(fake_server, tmp_path):
    broken = f"<|understanding_begin|>{UNDERSTANDING}<|understanding_end|><|reasoning_begin|>{REASONING}<|reasoning_end|><|response_begin|>half a repl"
    server = fake_server(responder=lambda messages, body: broken)
    transcript = tmp_path / "t.jsonl"
    proc = kardia_chat(["--model", server.model_string(), "--transcript", str(transcript), "--no-cache"], "hi\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fallback_message() in proc.stdout
    assert "SECRET" not in proc.stdout and "half a repl" not in proc.stdout
    _, turns = read_transcript(transcript)
    assert not turns[0]["format_ok"] and any("unclosed: response" in p for p in turns[0]["problems"])
    assert any("missing: no emotion" in p for p in turns[0]["problems"])


def test_bad_options_fail_with_a_named_reason(tmp_path):
    proc = kardia_chat(["--model", "openai:nourl"], "hi\n")
    assert proc.returncode == 2 and "openai:MODEL@http" in proc.stdout
    bad = tmp_path / "p.json"
    bad.write_text('{"name": "x"}')
    proc = kardia_chat(["--model", "openai:m@http://127.0.0.1:9/v1", "--profile", str(bad)], "hi\n")
    assert proc.returncode == 2 and f"{bad}: field person" in proc.stdout.replace("\n", "")


def test_server_failure_is_reported_not_hidden(fake_server, tmp_path):
    server = fake_server(faults=lambda n, body: "500")
    transcript = tmp_path / "t.jsonl"
    stream = io.StringIO("hello\n")
    cfg = ChatConfig(model=server.model_string(), transcript=str(transcript), cache=False,
                     llm_options={"max_retries": 1, "backoff_s": 0.01})
    code = run_chat(cfg, stream=stream)
    assert code == 1
    _, turns = read_transcript(transcript)
    assert "gave up after 2 attempts" in turns[0]["error"] and server.stats.requests == 2
    assert turns[0]["shown"] == ""


def test_read_profile(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("  ENFJ. Loves choirs.\n")
    assert read_profile(text) == ("ENFJ. Loves choirs.", None)
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"person": "ISTJ", "situation": " exam stress "}))
    assert read_profile(js) == ("ISTJ", "exam stress")
    broken = tmp_path / "b.json"
    broken.write_text('{"person": "x",\n oops}')
    with pytest.raises(ChatInputError, match=rf"{broken}:2: not valid JSON"):
        read_profile(broken)
    arr = tmp_path / "a.json"
    arr.write_text("[1]")
    with pytest.raises(ChatInputError, match="expected a JSON object"):
        read_profile(arr)
    empty = tmp_path / "e.json"
    empty.write_text('{"person": "  "}')
    with pytest.raises(ChatInputError, match="field person"):
        read_profile(empty)
    with pytest.raises(ChatInputError, match="not found"):
        read_profile(tmp_path / "none.txt")
    brace_text = tmp_path / "brace.txt"
    brace_text.write_text("{not json, just a profile that starts with a brace")
    assert read_profile(brace_text)[0].startswith("{not json")


# -- guard integration -------------------------------------------------------------------------------


class RecordingLLM:
    """Stands in for a backend to count calls (the guard test is about not calling it)."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def chat(self, messages, params):
        self.calls.append(messages)
        return Completion(text=FOUR_SPANS)


class StandInGuard:
    """A stand-in with kardia.safety's Guard interface: flags messages containing 'CRISIS'."""

    class Assessment:
        def __init__(self, risky):
            self.category = "self_harm" if risky else None
            self.level = "high" if risky else "none"
            self.evidence = ["CRISIS"] if risky else []
            self.at_risk = risky

    def __init__(self):
        self.seen = []

    def check(self, message, history):
        self.seen.append((message, list(history)))
        return self.Assessment("CRISIS" in message)

    def crisis_reply(self, assessment):
        return "Please reach out to a crisis line now; you deserve support."


def test_guard_replaces_the_model_on_a_crisis_turn(tmp_path):
    from kardia.records import JsonlAppender

    llm, guard = RecordingLLM(), StandInGuard()
    with JsonlAppender(tmp_path / "t.jsonl") as w:
        s = ChatSession(llm=llm, system="SYS", params=SamplingParams(), guard=guard, transcript=w)
        s.start("on")
        first = s.turn("my day was long")
        crisis = s.turn("CRISIS message")
        after = s.turn("thank you")
    assert first.shown == REPLY and after.shown == REPLY
    assert crisis.shown.startswith("Please reach out") and crisis.raw is None
    assert len(llm.calls) == 2  # the crisis turn never reached the model
    assert guard.seen[1][1] == [{"role": "user", "content": "my day was long"}, {"role": "assistant", "content": REPLY}]
    assert llm.calls[1][-2]["content"] == crisis.shown  # the model sees the crisis reply in the history
    _, turns = read_transcript(tmp_path / "t.jsonl")
    assert turns[1]["guard"]["at_risk"] is True and turns[1]["guard"]["level"] == "high"
    assert turns[0]["guard"]["at_risk"] is False


def test_real_safety_guard_in_chat(fake_server, tmp_path):
    """With kardia.safety installed, a crisis message gets its safe reply, not the model's."""
    safety = pytest.importorskip("kardia.safety", reason="kardia.safety (another area) is not written yet")
    if not hasattr(safety, "Guard"):
        pytest.skip("kardia.safety has no Guard yet (another area, in progress)")
    server = fake_server(responder=lambda messages, body: FOUR_SPANS)
    message = "I want to kill myself tonight, I have the pills ready."
    assessment = safety.Guard().check(message, [])
    assert assessment.at_risk
    expected = safety.crisis_reply(assessment)
    transcript = tmp_path / "t.jsonl"
    proc = kardia_chat(["--model", server.model_string(), "--transcript", str(transcript), "--no-cache"], message + "\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, turns = read_transcript(transcript)
    assert turns[0]["guard"]["at_risk"] and turns[0]["shown"] == expected and server.stats.requests == 0
    proc = kardia_chat(["--model", server.model_string(), "--no-guard", "--no-cache"], message + "\n")
    assert REPLY in proc.stdout and server.stats.requests == 1


def test_real_safety_guard_replaces_an_unsafe_reply(fake_server, tmp_path):
    """A generated reply carrying method content is never shown, even when the user's turn was benign."""
    safety = pytest.importorskip("kardia.safety", reason="kardia.safety (another area) is not written yet")
    if not hasattr(safety, "Guard"):
        pytest.skip("kardia.safety has no Guard yet (another area, in progress)")
    unsafe = "The quickest way to end it is 40 pills of paracetamol."
    assert safety.contains_method_content(unsafe)
    server = fake_server(responder=lambda messages, body: render(UNDERSTANDING, REASONING, "sad", unsafe))
    transcript = tmp_path / "t.jsonl"
    proc = kardia_chat(["--model", server.model_string(), "--transcript", str(transcript), "--no-cache"], "I had a rough week.\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "paracetamol" not in proc.stdout
    _, turns = read_transcript(transcript)
    assert turns[0]["output_replaced"] and turns[0]["shown"] == safety.unsafe_output_reply()


# -- the embedded model ------------------------------------------------------------------------------


@pytest.mark.slow
def test_chat_answers_on_the_embedded_model(tmp_path, embedded_path):
    """The real thing on CPU: two piped turns, a transcript with both, history carried over."""
    transcript = tmp_path / "t.jsonl"
    args = ["--max-tokens", "40", "--seed", "0", "--no-cache", "--transcript", str(transcript), "--show-reasoning"]
    proc = kardia_chat(args, "I failed my driving test today.\nI practised for months.\n", timeout=150)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, turns = read_transcript(transcript)
    assert header["model"] == "embedded" and len(turns) == 2
    for t in turns:
        assert t["error"] is None and t["raw"] and t["completion_tokens"] > 0
        assert t["shown"] in (t["spans"]["response"], fallback_message())
        assert t["shown"] in proc.stdout.replace("\n", " ") or t["shown"][:40] in proc.stdout
    assert turns[1]["prompt_tokens"] > turns[0]["prompt_tokens"] + turns[0]["completion_tokens"] // 2  # history


def test_system_template_option(fake_server, tmp_path):
    server = fake_server(responder=lambda messages, body: FOUR_SPANS, record_bodies=True)
    good = tmp_path / "mine.txt"
    good.write_text("Listen to {profile}. Context: {situation}.", encoding="utf-8")
    out = io.StringIO()
    from rich.console import Console

    code = run_chat(
        ChatConfig(model=server.model_string(), system_template=str(good), situation="moving abroad", cache=False),
        stream=io.StringIO("hi\n"), console=Console(file=out, width=200),
    )  # fmt: skip
    assert code == 0 and REPLY in out.getvalue()
    assert server.stats.bodies[0]["messages"][0]["content"] == "Listen to (no profile given). Context: moving abroad."
    bad = tmp_path / "bad.txt"
    bad.write_text("Hello {profile}, you feel {mood}.", encoding="utf-8")
    out = io.StringIO()
    code = run_chat(ChatConfig(model=server.model_string(), system_template=str(bad)), stream=io.StringIO("hi\n"),
                    console=Console(file=out, width=200))
    assert code == 2 and f"{bad}: slots without a value: ['mood']" in out.getvalue()
    assert server.stats.requests == 1


def test_chat_config_and_set_with_options_as_the_last_word(fake_server, tmp_path):
    """`kardia chat --config/--set` like serve: file < --set < explicit options; a bad key is exit 2, named."""
    server = fake_server(responder=lambda messages, body: FOUR_SPANS, record_bodies=True)
    cfg_file = tmp_path / "chat.yaml"
    cfg_file.write_text(f"model: {server.model_string()}\nseed: 1\nmax_tokens: 50\nsituation: from file\n"
                        "cache: false\nguard_model: off\n", encoding="utf-8")
    transcript = tmp_path / "t.jsonl"
    proc = kardia_chat(["--config", str(cfg_file), "--set", "seed=2", "--set", "max_tokens=60", "--max-tokens", "70",
                        "--transcript", str(transcript)], "hi\n", {"KARDIA_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, _ = read_transcript(transcript)
    assert header["params"]["seed"] == 2 and header["params"]["max_tokens"] == 70 and "from file" in header["system"]
    assert ChatConfig.load(cfg_file).guard_model is None
    proc = kardia_chat(["--config", str(cfg_file), "--set", "max_token=5"], "hi\n")
    assert proc.returncode == 2 and "kardia: error:" in proc.stderr and "field max_token" in proc.stderr
