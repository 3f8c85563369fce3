"""`kardia serve` over real HTTP with the official `openai` client.

Most tests serve a FAKE four-span model (kardia.testing.fake_openai_server: real HTTP, scripted answers)
so they check the server, not a model. Two tests load torch models (marked slow; run them under
`flock /tmp/kardia-cpu.lock`): the tiny random Llama for batching and the context-length error, and the
embedded SmolLM2 for one real generation.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from openai import OpenAI

from kardia.serve import ServeConfig, create_app
from kardia.spans import SPAN_TOKENS, render

SPANS = dict(
    understanding="SECRET-UNDERSTANDING the user feels low",
    reasoning="SECRET-REASONING support fits",
    emotion="sad",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app):
    """uvicorn in a thread on 127.0.0.1; yields the /v1 base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


def four_span_responder(messages, body):
    """FAKE model: a well-formed four-span answer whose response names the user's message."""
    last = messages[-1]["content"]
    tag = re.search(r"#(\d+)", last)
    response = f"I'm here with you, friend #{tag.group(1)}." if tag else "I'm here with you. Tell me more?"
    return render(response=response, **SPANS)


@pytest.fixture()
def fake_model(fake_server, monkeypatch):
    # Work-around for a bug in kardia.testing.fake_openai_server (see tests/test_safety.py: nested
    # endpoint annotation unresolvable under postponed annotations -> 422); harmless once fixed.
    import fastapi

    from kardia.testing import fake_openai_server

    monkeypatch.setattr(fake_openai_server, "Request", fastapi.Request, raising=False)
    return fake_server(responder=four_span_responder, record_bodies=True, latency_s=0.05)


def _client(base):
    return OpenAI(base_url=base, api_key="not-needed", max_retries=0, timeout=60)


def test_non_streaming_shows_only_the_response(fake_model):
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="kardia-test"))
    with running(app) as base:
        client = _client(base)
        assert [m.id for m in client.models.list().data] == ["kardia-test"]
        out = client.chat.completions.create(
            model="kardia-test",
            messages=[{"role": "user", "content": "I had a rough day at work."}],
            extra_body={"kardia": {"profile": "INFP, loves hiking", "situation": "work stress"}},
        )
    msg = out.choices[0].message
    assert msg.content == "I'm here with you. Tell me more?"
    assert "SECRET" not in msg.content and not any(t in msg.content for t in SPAN_TOKENS)
    info = out.choices[0].model_extra["kardia"]
    assert info["emotion"] == "sad" and info["spans_ok"] and info["safety"]["at_risk"] is False
    assert "spans" not in info  # not exposed unless the operator asks
    sent = fake_model.stats.bodies[-1]["messages"]
    assert sent[0]["role"] == "system" and "INFP, loves hiking" in sent[0]["content"] and "work stress" in sent[0]["content"]


def test_streaming_and_expose_spans(fake_model):
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", expose_spans=True))
    with running(app) as base:
        client = _client(base)
        stream = client.chat.completions.create(
            model="k",
            messages=[{"role": "system", "content": "You are kind."}, {"role": "user", "content": "hello there"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        plain = client.chat.completions.create(model="k", messages=[{"role": "user", "content": "hello there"}])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "I'm here with you. Tell me more?"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really chunked
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(final) == 1
    spans = final[0].choices[0].model_extra["kardia"]["spans"]
    assert spans["reasoning"] == SPANS["reasoning"] and spans["understanding"] == SPANS["understanding"]
    assert plain.choices[0].message.content == text
    # the client's own system prompt is used as given
    assert fake_model.stats.bodies[0]["messages"][0]["content"] == "You are kind."


def test_crisis_gets_the_policy_reply_and_never_reaches_the_model(fake_model, tmp_path):
    log = tmp_path / "crisis.jsonl"
    app = create_app(
        ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", locale=str(_locale("en-US.yaml")), crisis_log=str(log))
    )
    with running(app) as base:
        client = _client(base)
        before = fake_model.stats.requests
        out = client.chat.completions.create(
            model="k",
            messages=[
                {"role": "user", "content": "Work is awful lately."},
                {"role": "assistant", "content": "I'm sorry. What's been happening?"},
                {"role": "user", "content": "honestly i've been thinking about killing myself"},
            ],
        )
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model="k", messages=[{"role": "user", "content": "I took a whole bottle of pills"}], stream=True
            )
            if c.choices
        )
        assert fake_model.stats.requests == before  # the model was never asked
    content = out.choices[0].message.content
    assert "988" in content and "911" in content
    info = out.choices[0].model_extra["kardia"]
    assert info["guarded"] and info["safety"]["category"] == "self_harm"
    assert "911" in streamed
    events = [json.loads(l) for l in log.read_text().splitlines()]
    assert [e["category"] for e in events] == ["self_harm", "self_harm"]
    assert events[0]["request_id"].startswith("chatcmpl-") and "text" not in events[0]
    assert "killing myself" not in log.read_text()


def test_eight_concurrent_requests_fake(fake_model):
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k"))
    with running(app) as base:
        client = _client(base)

        def ask(i):
            return client.chat.completions.create(model="k", messages=[{"role": "user", "content": f"message #{i}"}])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(ask, range(8)))
    assert [o.choices[0].message.content for o in outs] == [f"I'm here with you, friend #{i}." for i in range(8)]
    assert fake_model.stats.max_in_flight > 1  # requests really overlapped


def test_errors_in_openai_format(fake_model):
    import openai

    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k"))
    with running(app) as base:
        client = _client(base)
        with pytest.raises(openai.NotFoundError) as e:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert e.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError, match="last message must come from the user"):
            client.chat.completions.create(model="k", messages=[{"role": "assistant", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="not both"):
            client.chat.completions.create(
                model="k",
                messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
                extra_body={"kardia": {"profile": "p"}},
            )
        r = httpx.post(base + "/chat/completions", json={"model": "k"})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_serve_command_as_subprocess(fake_model, tmp_path):
    """`kardia serve` itself (the CLI entry point) in a subprocess, queried with the openai client."""
    port = _free_port()
    env = {**os.environ, "KARDIA_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "kardia.cli", "serve", fake_model.model_string(), "--port", str(port),
           "--served-name", "k", "--locale", str(_locale("en-GB.yaml")), "--no-semantic-guard"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {proc.stdout.read() if proc.poll() is not None else 'timeout'}")
            time.sleep(0.1)
        client = _client(f"http://127.0.0.1:{port}/v1")
        out = client.chat.completions.create(model="k", messages=[{"role": "user", "content": "My husband hits me."}])
        assert "999" in out.choices[0].message.content
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["locale"] == "en-GB"
    finally:
        proc.terminate()
        proc.wait(10)


def _locale(name):
    from kardia.paths import resource_path

    return resource_path("safety", "locale", name)


@pytest.mark.slow
def test_tiny_model_batches_and_rejects_over_length(tiny_model_path):
    """Local backend: 8 concurrent requests share batched generate calls; an over-length request is a 400."""
    import openai

    app = create_app(ServeConfig(model=tiny_model_path, served_name="tiny", max_tokens=8, max_batch=8, semantic_guard=False))
    engine = app.state.engine
    with running(app) as base:
        client = _client(base)

        def ask(i):
            return client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": f"hello number {i}"}], max_tokens=8, temperature=0
            )

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(ask, range(8)))
        assert all(o.choices[0].message.content for o in outs)  # the span fallback for a random model
        assert engine.llm.batches_run < 8, engine.llm.batches_run
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "word " * 3000}])
        # the guard runs first: a person in crisis gets the safe reply even with an over-long message
        long_crisis = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "word " * 3000 + " I want to kill myself."}]
        )
        assert long_crisis.choices[0].model_extra["kardia"]["guarded"]
    assert e.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in e.value.body["message"]


@pytest.mark.slow
def test_embedded_model_real_generation(embedded_path):
    """One real generation by the embedded model through the server: content is never span markup."""
    from kardia.spans import visible_response

    app = create_app(ServeConfig(model="embedded", served_name="embedded", max_tokens=48, expose_spans=True))
    with running(app) as base:
        out = _client(base).chat.completions.create(
            model="embedded", messages=[{"role": "user", "content": "I passed my driving test today!"}], temperature=0
        )
    content = out.choices[0].message.content
    assert content and not any(t in content for t in SPAN_TOKENS)
    spans = out.choices[0].model_extra["kardia"]["spans"]
    assert set(spans) == {"understanding", "reasoning", "emotion", "response"}
    assert content == (spans["response"].strip() if spans["response"] else visible_response(""))
    assert out.usage.completion_tokens > 0


# -- hostile input (issue 16): every bad request a 4xx in the OpenAI error shape, never a 5xx --------
def _is_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"].get("message"), str), body
    assert {"type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def test_bad_requests_get_openai_errors_and_never_reach_the_model(fake_model):
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", max_body_bytes=65536))
    url = None
    with running(app) as base:
        url = base + "/chat/completions"
        before = fake_model.stats.requests
        bad = {
            "text part not a string": [{"role": "user", "content": [{"type": "text", "text": 42}]}],
            "text part a list": [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}],
            "part not an object": [{"role": "user", "content": ["hello"]}],
            "image part": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "content a number": [{"role": "user", "content": 5}],
            "user without content": [{"role": "user"}],
            "user content null": [{"role": "user", "content": None}],
            "message not an object": ["hello"],
            "role not a string": [{"role": ["user"], "content": "hi"}],
        }
        for why, messages in bad.items():
            err = _is_openai_error(httpx.post(url, json={"model": "k", "messages": messages}), 400)
            assert "messages" in err["message"] and "Traceback" not in err["message"], why
        err = _is_openai_error(httpx.post(url, content=b'{"model": "k", "messages": [', headers={"content-type": "application/json"}), 400)
        assert "not valid JSON" in err["message"] and "line 1" in err["message"]
        err = _is_openai_error(httpx.post(url, content=b'{"model": "k\xff\xfe", "messages": []}', headers={"content-type": "application/json"}), 400)
        assert "UTF-8" in err["message"]
        _is_openai_error(httpx.post(url, content=b'[1, 2]', headers={"content-type": "application/json"}), 400)
        _is_openai_error(httpx.post(url, content=b'{"model": "k", "messages": [], "temperature": NaN}'), 400)
        _is_openai_error(httpx.post(url, json={"model": "k", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "x"}), 400)
        # over the body limit: 413 whether the length is declared or the body is streamed in chunks
        big = json.dumps({"model": "k", "messages": [{"role": "user", "content": "a" * 100_000}]}).encode()
        t0 = time.monotonic()
        err = _is_openai_error(httpx.post(url, content=big, headers={"content-type": "application/json"}), 413)
        assert time.monotonic() - t0 < 2 and "65536" in err["message"]
        _is_openai_error(httpx.post(url, content=iter([big[:40000], big[40000:]]), headers={"content-type": "application/json"}), 413)
        _is_openai_error(httpx.get(base + "/nowhere"), 404)
        # a lone surrogate (valid JSON escape) is no 500
        ok = httpx.post(url, content=b'{"model": "k", "messages": [{"role": "user", "content": "hi \\ud800 there"}]}')
        assert ok.status_code == 200, ok.text
        assert fake_model.stats.requests == before + 1  # only the last, valid request reached the model


def test_the_guard_runs_off_the_event_loop(fake_model, monkeypatch):
    """A slow guard check (it is ~4 s per MiB of text) must not stall /health or other clients."""
    import importlib

    assess_mod = importlib.import_module("kardia.safety.assess")  # the package's `assess` is the function
    real = assess_mod.assess_patterns

    def slow(message, *a, **kw):
        if "SLOW" in message:
            time.sleep(2.0)
        return real(message, *a, **kw)

    monkeypatch.setattr(assess_mod, "assess_patterns", slow)
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k"))
    with running(app) as base:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow_req = pool.submit(httpx.post, base + "/chat/completions", timeout=30,
                                   json={"model": "k", "messages": [{"role": "user", "content": "SLOW message"}]})
            time.sleep(0.3)
            t0 = time.monotonic()
            assert httpx.get(base.rsplit("/v1", 1)[0] + "/health", timeout=10).status_code == 200
            health_s = time.monotonic() - t0
            quick = httpx.post(base + "/chat/completions", timeout=30,
                               json={"model": "k", "messages": [{"role": "user", "content": "hello #7"}]})
            quick_s = time.monotonic() - t0
            assert slow_req.result().status_code == 200
    assert health_s < 0.8, health_s
    assert quick.status_code == 200 and quick_s < 1.5, quick_s


def test_other_families_special_tokens_never_reach_the_user(fake_server):
    def responder(messages, body):
        return render(response="I hear you.<｜end▁of▁sentence｜><|eot_id|></s><end_of_turn>", **SPANS)

    model = fake_server(responder=responder)
    app = create_app(ServeConfig(model=model.model_string(), semantic_guard=False, served_name="k"))
    with running(app) as base:
        out = _client(base).chat.completions.create(model="k", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "I hear you."


def test_max_context_is_enforced_for_a_remote_model(fake_model):
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", max_context=2000, max_tokens=100))
    with running(app) as base:
        url = base + "/chat/completions"
        before = fake_model.stats.requests
        err = _is_openai_error(httpx.post(url, json={"model": "k", "messages": [{"role": "user", "content": "word " * 5000}]}), 400)
        assert err["code"] == "context_length_exceeded" and "2000" in err["message"]
        assert fake_model.stats.requests == before
        assert httpx.post(url, json={"model": "k", "messages": [{"role": "user", "content": "a short one"}]}).status_code == 200


def test_certainly_overlong_requests_are_refused_before_a_full_pass_but_crisis_still_answered(fake_model, monkeypatch):
    """A request whose lower bound of tokens is over the context gets its 400 without the guard or the
    tokenizer reading all of it (1 MiB cost seconds); the guard reads the head and tail of the last
    message, so a crisis at the end of a huge message still gets the safe reply."""
    import kardia.serve as serve

    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", max_context=2000,
                                 max_tokens=100, guard_process_chars=0))
    engine = app.state.engine
    seen = []
    real = engine.check

    async def spy(message, history, request_id, **kw):
        seen.append(len(message) + sum(len(m["content"]) for m in history))
        return await real(message, history, request_id=request_id, **kw)

    monkeypatch.setattr(engine, "check", spy)
    huge = "I had a long week and I keep thinking about it. " * 20_000  # ~1 MB
    with running(app) as base:
        url = base + "/chat/completions"
        before = fake_model.stats.requests
        err = _is_openai_error(httpx.post(url, timeout=60, json={"model": "k", "messages": [{"role": "user", "content": huge}]}), 400)
        assert err["code"] == "context_length_exceeded" and "at least" in err["message"]
        assert seen[-1] <= serve.OVERLONG_GUARD_WINDOW_CHARS + 1  # the guard read a window, not the megabyte
        r = httpx.post(url, timeout=60, json={"model": "k", "messages": [
            {"role": "user", "content": huge + " I want to kill myself tonight."}]})
        info = r.json()["choices"][0]["message"]["kardia"]
        assert r.status_code == 200 and info["guarded"] and info["safety"]["category"] == "self_harm"
        assert fake_model.stats.requests == before


def test_llm_options_bound_a_hung_model(fake_server):
    """With llm_options (timeout, retries) a hung upstream is a quick 502 in OpenAI's shape, not minutes."""
    hung = fake_server(responder=four_span_responder, faults=lambda n, body: "hang", hang_s=20)
    cfg = ServeConfig.load(None, [f"model={hung.model_string()}", "served_name=k", "semantic_guard=false",
                                  "llm_options.timeout_s=0.3", "llm_options.max_retries=0"])
    with running(create_app(cfg)) as base:
        t0 = time.monotonic()
        r = httpx.post(base + "/chat/completions", timeout=30, json={"model": "k", "messages": [{"role": "user", "content": "hi"}]})
        assert time.monotonic() - t0 < 5
    assert _is_openai_error(r, 502)["code"] == "model_error"


def test_long_guard_checks_run_in_the_guard_process(fake_model):
    """The guard's patterns are pure Python (~4 s of CPU per MiB): in a thread they still hold the GIL the
    event loop needs, so a long text is checked in a separate process; short ones stay in a thread."""
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", guard_process_chars=2000))
    engine = app.state.engine
    long_text = "I had a long week at work and I keep going over it. " * 60
    with running(app) as base:
        url = base + "/chat/completions"
        r = httpx.post(url, timeout=120, json={"model": "k", "messages": [{"role": "user", "content": "hello #1"}]})
        assert r.status_code == 200 and engine.guard_offloaded == 0 and engine._guard_pool is None
        r = httpx.post(url, timeout=120, json={"model": "k", "messages": [{"role": "user", "content": long_text + " #2"}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "I'm here with you, friend #2."
        assert engine.guard_offloaded == 1 and engine._guard_pool._processes  # a live process of its own
        # the crisis found in the process still gets the safe reply, and the model is not asked
        before = fake_model.stats.requests
        r = httpx.post(url, timeout=120, json={"model": "k", "messages": [
            {"role": "user", "content": long_text}, {"role": "assistant", "content": "I'm listening."},
            {"role": "user", "content": "I want to kill myself tonight"}]})
        info = r.json()["choices"][0]["message"]["kardia"]
        assert r.status_code == 200 and info["guarded"] and info["safety"]["category"] == "self_harm"
        assert engine.guard_offloaded == 2 and fake_model.stats.requests == before
        assert engine.guard.counts["at_risk"] == 1
    assert engine._guard_pool is None  # shut down with the server


def test_large_bodies_are_parsed_off_the_event_loop(fake_model, monkeypatch):
    """A large body (~0.1 s to parse and check at 1 MiB) is parsed in a worker thread, a small one inline."""
    import kardia.serve as serve

    threads = []
    real = serve._parse_request

    def spy(raw, *args):
        threads.append(threading.current_thread().name)
        return real(raw, *args)

    monkeypatch.setattr(serve, "_parse_request", spy)
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", max_context=2000))
    with running(app) as base:
        url = base + "/chat/completions"
        assert httpx.post(url, timeout=60, json={"model": "k", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
        many = [{"role": "user", "content": "hi"}] * 3000  # > LARGE_BODY_BYTES, over the context
        err = _is_openai_error(httpx.post(url, timeout=60, json={"model": "k", "messages": many}), 400)
        assert err["code"] == "context_length_exceeded"
        err = _is_openai_error(httpx.post(url, timeout=60, json={"model": "k", "messages": many + [{"role": "user", "content": 5}]}), 400)
        assert "messages[3000].content" in err["message"]  # a _Reject raised in the thread is the same 400
    loop_thread, *workers = threads
    assert len(workers) == 2 and all(w != loop_thread for w in workers), threads


def test_a_huge_message_list_is_refused_from_its_count_and_its_last_message(fake_model, monkeypatch):
    """More messages than the context holds in template tokens alone: certainly over it, so only the last
    message is read (for the guard, patterns only); the others are not checked one by one."""
    app = create_app(ServeConfig(model=fake_model.model_string(), semantic_guard=False, served_name="k", max_context=2000))
    engine = app.state.engine
    calls = []
    real = engine.check

    async def spy(message, history, request_id, **kw):
        calls.append(kw.get("patterns_only", False))
        return await real(message, history, request_id=request_id, **kw)

    monkeypatch.setattr(engine, "check", spy)
    many = [{"role": "user", "content": "hi"}] * 700  # 700 * 3 template tokens > 2000
    bad_inside = many[:350] + [{"role": "user", "content": 5}] + many[350:]
    with running(app) as base:
        url = base + "/chat/completions"
        before = fake_model.stats.requests
        for messages in (many, bad_inside):
            err = _is_openai_error(httpx.post(url, timeout=60, json={"model": "k", "messages": messages}), 400)
            assert err["code"] == "context_length_exceeded" and "at least" in err["message"]
        err = _is_openai_error(httpx.post(url, timeout=60, json={"model": "k", "messages": many + [{"role": "user", "content": 5}]}), 400)
        assert "messages[700].content" in err["message"]  # the last message is checked, with its index
        r = httpx.post(url, timeout=60, json={"model": "k", "messages": many + [{"role": "user", "content": "I want to kill myself tonight."}]})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["kardia"]["guarded"]
        assert fake_model.stats.requests == before and calls == [True, True, True]
