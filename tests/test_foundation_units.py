"""Unit tests of the foundation: model strings, the response cache, config loading, records, prompts."""

from __future__ import annotations

import asyncio
import os
from typing import Sequence

import pytest
from pydantic import BaseModel

from kardia.config import ConfigError, KardiaConfig, OptionalModel
from kardia.llm import CachedLLM, Completion, LLMError, ResponseCache, SamplingParams, parse_model_string
from kardia.llm.types import LLM, Conversation, request_key
from kardia.prompts import TemplateError, fill, slots, system_prompt
from kardia.records import JsonlAppender, RecordError, done_keys, iter_jsonl, repair_torn_tail

# -- model strings -----------------------------------------------------------------------------


def test_model_string_embedded_and_folder(tmp_path):
    assert parse_model_string("embedded").kind == "embedded"
    assert parse_model_string("  embedded\n").display == "embedded"
    spec = parse_model_string(str(tmp_path))
    assert spec.kind == "local" and spec.model == str(tmp_path) and spec.display == str(tmp_path)
    home_rel = os.path.relpath(tmp_path, os.path.expanduser("~"))
    assert parse_model_string(os.path.join("~", home_rel)).model == str(tmp_path)


@pytest.mark.parametrize(
    "text,model,urls,key_env",
    [
        ("openai:gpt-4o-mini@https://api.openai.com/v1", "gpt-4o-mini", ["https://api.openai.com/v1"], "OPENAI_API_KEY"),
        ("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1/", "Qwen/Qwen3-8B", ["http://127.0.0.1:8000/v1"], "OPENAI_API_KEY"),
        ("openai:m@http://a:1/v1,http://b:2/v1", "m", ["http://a:1/v1", "http://b:2/v1"], "OPENAI_API_KEY"),
        ("openai:m@http://a:1/v1, http://b:2/v1 ,", "m", ["http://a:1/v1", "http://b:2/v1"], "OPENAI_API_KEY"),
        ("openai:m@http://h/v1#MY_KEY", "m", ["http://h/v1"], "MY_KEY"),
        ("openai:org/model@v2@http://h:1/v1", "org/model@v2", ["http://h:1/v1"], "OPENAI_API_KEY"),
        ("openai:m@http://user:pw@h:1/v1", "m", ["http://user:pw@h:1/v1"], "OPENAI_API_KEY"),
        ("openai:llama3.2:1b@http://localhost:11434/v1", "llama3.2:1b", ["http://localhost:11434/v1"], "OPENAI_API_KEY"),
    ],
)
def test_model_string_openai(text, model, urls, key_env):
    spec = parse_model_string(text)
    assert (spec.kind, spec.model, spec.base_urls, spec.api_key_env) == ("openai", model, urls, key_env)
    assert parse_model_string(spec.display).base_urls == urls  # display is itself a model string


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty model string"),
        ("   ", "empty model string"),
        ("gpt-4o", "neither 'embedded'"),
        ("/no/such/folder/anywhere", "neither 'embedded'"),
        ("Embedded", "neither 'embedded'"),
        ("openai:gpt-4o", "expected 'openai:MODEL@http"),
        ("openai:gpt-4o@", "expected 'openai:MODEL@http"),
        ("openai:@http://h/v1", "model name and at least one base URL"),
        ("openai:m@ftp://h/v1", "expected 'openai:MODEL@http"),
        ("openai:m@http://h/v1,ftp://x", "must look like http"),
        ("openai:m@http://", "must look like http"),
        ("openai:m@http://h/v1#", "must name an environment variable"),
        ("openai:m@http://h/v1#MY-KEY", "must name an environment variable"),
    ],
)
def test_model_string_errors(text, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        parse_model_string(text)


def test_model_string_rejects_non_strings():
    with pytest.raises(ValueError, match="empty model string"):
        parse_model_string(None)  # type: ignore[arg-type]


# -- response cache --------------------------------------------------------------------------------


class CountingLLM(LLM):
    """A deterministic in-process backend that counts calls (a test double for the cache only)."""

    def __init__(self, name="counting", fail_on: str | None = None):
        self.name = name
        self.calls: list[str] = []
        self.fail_on = fail_on
        self.extra_attribute = "from-inner"

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        out = []
        for messages in batch:
            text = messages[-1]["content"]
            self.calls.append(text)
            if text == self.fail_on:
                out.append(Completion(text="", finish_reason="error"))
            else:
                out.append(Completion(text=f"answer to {text} #{len(self.calls)}", prompt_tokens=3, completion_tokens=4))
        return out


def test_token_probs_is_one_capability_on_the_model_interface(tmp_path):
    """Callers ask `llm.token_probs` (not hasattr): local backends have it, remote ones not, a cache forwards it."""
    from kardia.llm.local import LocalLLM
    from kardia.llm.openai_backend import OpenAILLM

    assert LocalLLM.token_probs is True and OpenAILLM.token_probs is False and CountingLLM().token_probs is False
    cache = ResponseCache(tmp_path / "c.sqlite")
    assert CachedLLM(CountingLLM(), cache).token_probs is False

    class WithProbs(CountingLLM):
        token_probs = True

    assert CachedLLM(WithProbs(), cache).token_probs is True


def conv(text: str) -> list[dict]:
    return [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]


def test_cache_hits_only_for_deterministic_calls(tmp_path):
    inner = CountingLLM()
    llm = CachedLLM(inner, ResponseCache(tmp_path / "c.sqlite"))
    greedy = SamplingParams(temperature=0)
    first = llm.generate([conv("a"), conv("b")], greedy)
    again = llm.generate([conv("b"), conv("a"), conv("c")], greedy)
    assert inner.calls == ["a", "b", "c"]
    assert [c.cached for c in first] == [False, False]
    assert [c.cached for c in again] == [True, True, False]
    assert again[1].text == first[0].text and again[0].text == first[1].text
    assert again[0].prompt_tokens == 3 and again[0].completion_tokens == 4
    assert (llm.hits, llm.misses) == (2, 3)

    seeded = SamplingParams(temperature=0.9, seed=7)
    llm.chat(conv("a"), seeded)
    assert llm.chat(conv("a"), seeded).cached  # seeded sampling counts as deterministic
    assert not llm.chat(conv("a"), SamplingParams(temperature=0.9, seed=8)).cached  # another seed: new key

    sampled = SamplingParams(temperature=0.9)
    n = len(inner.calls)
    r1, r2 = llm.chat(conv("a"), sampled), llm.chat(conv("a"), sampled)
    assert len(inner.calls) == n + 2 and not r1.cached and not r2.cached  # never cached
    assert r1.text != r2.text


def test_cache_key_covers_model_messages_and_every_parameter(tmp_path):
    base = SamplingParams(temperature=0)
    k = request_key("m", conv("a"), base)
    assert k == request_key("m", conv("a"), SamplingParams(temperature=0))
    assert k != request_key("other", conv("a"), base)
    assert k != request_key("m", conv("b"), base)
    assert k != request_key("m", [{"role": "user", "content": "a"}], base)
    for change in (dict(max_tokens=5), dict(top_p=0.5), dict(stop=["x"]), dict(seed=1)):
        assert k != request_key("m", conv("a"), base.model_copy(update=change)), change


def test_cache_persists_across_instances_and_skips_errors(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    inner = CountingLLM(fail_on="broken")
    llm = CachedLLM(inner, ResponseCache(path))
    p = SamplingParams(temperature=0)
    llm.generate([conv("a"), conv("broken")], p)
    assert len(ResponseCache(path)) == 1  # the error completion is not stored

    inner2 = CountingLLM(fail_on="broken")
    llm2 = CachedLLM(inner2, ResponseCache(path))
    out = llm2.generate([conv("a"), conv("broken")], p)
    assert inner2.calls == ["broken"]  # "a" came from disk, written by the first instance
    assert out[0].cached and out[0].text == "answer to a #1"
    assert llm2.extra_attribute == "from-inner"  # backend extras pass through


def test_cache_works_under_concurrent_async_callers(tmp_path):
    inner = CountingLLM()
    llm = CachedLLM(inner, ResponseCache(tmp_path / "c.sqlite"))
    p = SamplingParams(temperature=0)

    async def many():
        return await asyncio.gather(*(llm.achat(conv(f"q{i % 5}"), p) for i in range(40)))

    asyncio.run(many())
    assert len(ResponseCache(tmp_path / "c.sqlite")) == 5
    again = asyncio.run(many())
    assert all(c.cached for c in again)


def test_cached_llm_propagates_backend_errors(tmp_path):
    class Failing(CountingLLM):
        async def agenerate(self, batch, params=None):
            raise LLMError("server gone")

    llm = CachedLLM(Failing(), ResponseCache(tmp_path / "c.sqlite"))
    with pytest.raises(LLMError, match="server gone"):
        llm.chat(conv("a"), SamplingParams(temperature=0))
    assert len(llm.cache) == 0


def test_cached_llm_without_inner_does_not_recurse():
    bare = CachedLLM.__new__(CachedLLM)
    with pytest.raises(AttributeError):
        bare.tokenizer  # noqa: B018


# -- config ------------------------------------------------------------------------------------------


class JudgeSection(KardiaConfig):  # sections subclass KardiaConfig too, so typos in them are errors
    model: str = "embedded"
    temperature: float = 0.0


class DemoConfig(KardiaConfig):
    name: str = "demo"
    max_exchanges: int = 10
    weights: list[float] = [1 / 3, 1 / 3, 1 / 3]
    judge: JudgeSection = JudgeSection()


def test_config_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: run1\nmax_exchanges: 4\njudge:\n  model: openai:x@http://h/v1\n", encoding="utf-8")
    cfg = DemoConfig.load(f, ["max_exchanges=6", "judge.temperature=0.5", "weights=[0.5, 0.25, 0.25]", "name="])
    assert cfg.max_exchanges == 6 and cfg.judge.model == "openai:x@http://h/v1" and cfg.judge.temperature == 0.5
    assert cfg.weights == [0.5, 0.25, 0.25] and cfg.name == ""
    assert DemoConfig.load(None) == DemoConfig()
    assert DemoConfig.load(tmp_path / "c.yaml").name == "run1"
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert DemoConfig.load(empty) == DemoConfig()
    # round trip through to_yaml
    out = tmp_path / "out.yaml"
    out.write_text(cfg.to_yaml(), encoding="utf-8")
    assert DemoConfig.load(out) == cfg


def test_config_errors_name_file_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("max_exchanges: lots\njudge:\n  temprature: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        DemoConfig.load(f)
    msg = str(err.value)
    assert str(f) in msg and "field max_exchanges" in msg and "field judge.temprature" in msg

    with pytest.raises(ConfigError, match=r"field max_exchanges: .*from override 'max_exchanges=many'"):
        DemoConfig.load(None, ["max_exchanges=many"])
    with pytest.raises(ConfigError, match="override 'max_exchanges': expected key=value"):
        DemoConfig.load(None, ["max_exchanges"])
    with pytest.raises(ConfigError, match="empty key"):
        DemoConfig.load(None, ["judge.=1"])
    with pytest.raises(ConfigError, match="value is not valid YAML"):
        DemoConfig.load(None, ["weights=[1, 2"])
    with pytest.raises(ConfigError, match="config file not found"):
        DemoConfig.load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="it is a folder"):
        DemoConfig.load(tmp_path)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"{lst}: top level must be a mapping"):
        DemoConfig.load(lst)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: ok\njudge: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{broken}:\d+: not valid YAML"):
        DemoConfig.load(broken)


def test_from_cli_precedence_file_then_set_then_explicit(tmp_path):
    """The one loader: YAML file < `--set` < explicit CLI values (Python objects, None = not given)."""
    f = tmp_path / "c.yaml"
    f.write_text("name: file\nmax_exchanges: 1\njudge:\n  model: from-file\n  temperature: 0.1\n", encoding="utf-8")
    cfg = DemoConfig.from_cli(f, ["max_exchanges=2", "judge.model=from-set", "name=set"],
                              {"max_exchanges": 3, "judge.model": "explicit", "name": None})
    assert cfg.max_exchanges == 3 and cfg.judge.model == "explicit" and cfg.judge.temperature == 0.1
    assert cfg.name == "set"  # None: the option was not given, the override stands
    # explicit values are objects, not YAML text: a string that YAML would read as a number stays a string
    assert DemoConfig.from_cli(None, (), {"name": "1e3", "judge.model": tmp_path}).name == "1e3"
    assert DemoConfig.from_cli(None, (), {"judge.model": tmp_path}).judge.model == str(tmp_path)
    with pytest.raises(ConfigError, match=r"field max_exchanges: .*from option max_exchanges='many'"):
        DemoConfig.from_cli(None, (), {"max_exchanges": "many"})


def test_fail_prints_kardia_error_and_exits_2(capsys):
    from kardia.config import fail

    with pytest.raises(SystemExit) as exc:
        fail(ConfigError("c.yaml: field x: bad"))
    assert exc.value.code == 2
    assert capsys.readouterr().err == "kardia: error: c.yaml: field x: bad\n"


class WithOptionalModel(KardiaConfig):
    judge: OptionalModel = "embedded"


@pytest.mark.parametrize("raw", ["none", "off", "OFF", " None ", "false", "no", "", None])
def test_optional_model_off_words_are_none(raw, tmp_path):
    assert WithOptionalModel(judge=raw).judge is None
    assert WithOptionalModel.from_cli(None, (), {"judge": raw if raw is not None else "none"}).judge is None
    f = tmp_path / "c.yaml"
    f.write_text(f"judge: {raw if raw is not None else 'null'}\n", encoding="utf-8")  # YAML: off/no/false -> False
    assert WithOptionalModel.load(f).judge is None


def test_optional_model_keeps_model_strings_and_rejects_true():
    assert WithOptionalModel().judge == "embedded"
    assert WithOptionalModel(judge="openai:m@http://h/v1").judge == "openai:m@http://h/v1"
    with pytest.raises(ConfigError, match="field judge: .*'none' or 'off'"):
        WithOptionalModel.load(None, ["judge=yes"])


# -- records -------------------------------------------------------------------------------------------


class Item(BaseModel):
    id: int
    text: str


def test_iter_jsonl_names_file_line_and_field(tmp_path):
    f = tmp_path / "items.jsonl"
    f.write_text('{"id": 1, "text": "a"}\n\n{"id": "x", "text": "b"}\n', encoding="utf-8")
    assert list(iter_jsonl(f))[0] == (1, {"id": 1, "text": "a"})
    with pytest.raises(RecordError) as err:
        list(iter_jsonl(f, model=Item))
    e = err.value
    assert (e.path, e.line, e.field) == (str(f), 3, "id")
    assert str(e).startswith(f"{f}:3: field id: ")

    f.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": \n[1]\n{"id": 4}\n"\\ud800"\n', encoding="utf-8")
    bad: list[RecordError] = []
    good = list(iter_jsonl(f, model=Item, skip_bad=True, bad=bad))
    assert [n for n, _ in good] == [1]
    assert [(b.line, b.field) for b in bad] == [(2, None), (3, None), (4, "text"), (5, None)]
    assert "not valid JSON" in bad[0].reason and "expected a JSON object, got list" in bad[1].reason
    assert "Field required" in bad[2].reason


def test_iter_jsonl_bad_encoding_and_missing_file(tmp_path):
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"id": 1, "text": "ok"}\n{"id": 2, "text": "caf\xe9"}\n')
    with pytest.raises(RecordError, match=r"latin.jsonl:2: not valid UTF-8"):
        list(iter_jsonl(f))
    with pytest.raises(FileNotFoundError, match="file not found"):
        list(iter_jsonl(tmp_path / "nope.jsonl"))


def test_iter_jsonl_streams(tmp_path):
    f = tmp_path / "big.jsonl"
    with JsonlAppender(f, fsync=False) as w:
        for i in range(2000):
            w.write({"id": i, "text": "x" * 50})
    it = iter_jsonl(f, model=Item)
    assert next(it)[1].id == 0  # a generator: nothing read ahead of need
    assert sum(1 for _ in it) == 1999


def test_appender_repairs_a_torn_last_line_and_resumes(tmp_path):
    f = tmp_path / "out.jsonl"
    with JsonlAppender(f) as w:
        w.write({"id": 1, "text": "é"})
        w.write(Item(id=2, text="b"))
    with f.open("ab") as fh:  # a process killed mid-write, even inside a multi-byte character
        fh.write('{"id": 3, "text": "caf'.encode() + "é".encode()[:1])
    assert done_keys(f) == {1, 2}
    with JsonlAppender(f) as w:
        w.write({"id": 3, "text": "c"})
    rows = [r for _, r in iter_jsonl(f)]
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["text"] == "é"
    assert done_keys(f) == {1, 2, 3}


def test_repair_keeps_a_complete_last_record_without_newline(tmp_path):
    f = tmp_path / "hand.jsonl"
    f.write_text('{"id": 1}\n{"id": 2}', encoding="utf-8")  # written by an editor: no final newline
    assert done_keys(f) == {1, 2}  # counts it, as the appender keeps it: no duplicate on resume
    assert repair_torn_tail(f) == 0
    assert f.read_text(encoding="utf-8") == '{"id": 1}\n{"id": 2}\n'
    with JsonlAppender(f) as w:
        w.write({"id": 3})
    assert [r["id"] for _, r in iter_jsonl(f)] == [1, 2, 3]


@pytest.mark.parametrize(
    "content,kept",
    [
        (b"", b""),
        (b'{"id": 1}\n', b'{"id": 1}\n'),
        (b'{"id": 1', b""),  # a single torn line: the file is emptied
        (b'{"id": 1}\n12', b'{"id": 1}\n'),  # a bare number may be a torn prefix: cut
        (b'{"id": 1}\n' + b'{"t": "' + b"x" * 10000, b'{"id": 1}\n'),  # torn line longer than one chunk
        (b"x" * 9000, b""),
    ],
)
def test_repair_torn_tail_cases(tmp_path, content, kept):
    f = tmp_path / "f.jsonl"
    f.write_bytes(content)
    removed = repair_torn_tail(f)
    assert f.read_bytes() == kept
    assert removed == len(content) - len(kept)


def test_done_keys(tmp_path):
    f = tmp_path / "d.jsonl"
    assert done_keys(f) == set()
    f.write_text('{"id": "a"}\n{"other": 1}\nnot json\n{"id": ["x", 1]}\n{"key": 5}\n{"id": "b"', encoding="utf-8")
    assert done_keys(f) == {"a", '["x", 1]'}
    assert done_keys(f, key="key") == {5}


# -- prompts -------------------------------------------------------------------------------------------


def test_fill_needs_every_slot(tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("Hello {name}, you feel {emotion}. Literal {{braces}}.", encoding="utf-8")
    assert slots(t.read_text()) == {"name", "emotion"}
    assert fill(t, name="Ana", emotion="hopeful", unused=1) == "Hello Ana, you feel hopeful. Literal {braces}."
    assert fill(t, name=None, emotion="x") == "Hello , you feel x. Literal {braces}."
    with pytest.raises(TemplateError) as err:
        fill(t, name="Ana")
    assert str(err.value) == f"{t}: slots without a value: ['emotion']"


@pytest.mark.parametrize("body", ['JSON example: {"score": 3}', "positional {}", "unclosed {name", "index {0}"])
def test_malformed_templates_are_named_errors(tmp_path, body):
    t = tmp_path / "bad.txt"
    t.write_text(body, encoding="utf-8")
    with pytest.raises(TemplateError, match=str(t)):
        fill(t, name="x")


def test_system_prompt_is_the_shipped_template():
    text = system_prompt("INFP. Likes hiking.", "Lost my job.")
    assert "INFP. Likes hiking." in text and "Lost my job." in text
    assert "<|response_begin|>" in text
    assert "(no profile given)" in system_prompt("", "") and "(not stated)" in system_prompt(None, None)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fill("no/such/template")


def test_cpu_precision_is_measured_or_forced(monkeypatch):
    """bf16 is ~3x faster on CPUs with native bf16 and 2-5x slower on others: chosen by measurement,
    forced by KARDIA_CPU_BF16, and an explicit dtype always wins."""
    from kardia.llm import precision

    monkeypatch.setenv("KARDIA_CPU_BF16", "0")
    assert precision.cpu_prefers_bf16() is False
    monkeypatch.setenv("KARDIA_CPU_BF16", "1")
    assert precision.cpu_prefers_bf16() is True
    monkeypatch.setenv("KARDIA_CPU_BF16", "yes")
    with pytest.raises(ValueError, match="KARDIA_CPU_BF16"):
        precision.cpu_prefers_bf16()
    monkeypatch.delenv("KARDIA_CPU_BF16")
    assert precision.inference_dtype("float32") == ("float32", False)
    assert precision.inference_dtype("bfloat16") == ("bfloat16", False)
    speedup = precision.cpu_bf16_speedup()
    assert speedup >= 0 and precision.cpu_prefers_bf16() == (speedup >= 1.5)


def test_release_llm_forgets_every_shared_instance_of_a_model(tmp_path):
    """Recipes evaluate many models in one process; released ones must not stay in the registry."""
    from kardia.llm import _registry, load_llm, release_llm

    a = load_llm("openai:m@http://127.0.0.1:9/v1", cache=False)
    b = load_llm("openai:m@http://127.0.0.1:9/v1", cache=tmp_path / "c.sqlite")
    other = load_llm("openai:other@http://127.0.0.1:9/v1", cache=False)
    assert a is not b
    assert release_llm("openai:m@http://127.0.0.1:9/v1") == 2
    assert load_llm("openai:m@http://127.0.0.1:9/v1", cache=False) is not a  # a fresh instance
    assert load_llm("openai:other@http://127.0.0.1:9/v1", cache=False) is other
    release_llm("openai:m@http://127.0.0.1:9/v1")
    release_llm("openai:other@http://127.0.0.1:9/v1")
    assert not any("127.0.0.1:9" in str(k[0]) for k in _registry)
