"""The openai backend against a REAL OpenAI-compatible server: `transformers serve` on the embedded
model folder (offline, a subprocess on 127.0.0.1). Slow: it loads the 135M model in its own process."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kardia.llm import SamplingParams, load_llm
from kardia.llm.openai_backend import OpenAILLM

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def transformers_cli() -> list[str]:
    exe = Path(sys.executable).parent / "transformers"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("transformers")
    if found:
        return [found]
    return [sys.executable, "-c", "from transformers.cli.transformers import main; main()"]


def start_transformers_serve(model_dir: str, log_path: Path, startup_timeout_s: float = 90.0):
    """Start `transformers serve MODEL_DIR` and wait for /health; returns (process, base_url)."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = transformers_cli() + [
        "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32",
        "--log-level", "warning",
    ]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health", timeout=1.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"transformers serve did not answer /health in {startup_timeout_s}s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)
    return proc, base + "/v1"


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def served(embedded_path, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    proc, base_url = start_transformers_serve(embedded_path, log)
    yield embedded_path, base_url
    stop_process(proc)


def test_models_endpoint_names_the_folder(served):
    model, base_url = served
    ids = [m["id"] for m in httpx.get(base_url + "/models", timeout=10).json()["data"]]
    assert model in ids


def test_sync_completion_through_load_llm(served):
    model, base_url = served
    llm = load_llm(f"openai:{model}@{base_url}", cache=False, timeout_s=60, max_retries=1)
    assert isinstance(llm, OpenAILLM)
    c = llm.chat([{"role": "user", "content": "Say hello."}], SamplingParams(max_tokens=8, temperature=0))
    assert c.text.strip() and c.completion_tokens > 0 and c.finish_reason in ("stop", "length")
    assert llm.stats["retries"] == 0


def test_async_completions_at_concurrency_4(served):
    model, base_url = served
    llm = load_llm(f"openai:{model}@{base_url}", cache=False, timeout_s=60, max_retries=1, max_concurrency=4)
    prompts = ["Hi.", "I feel sad today.", "What is a cat?", "Name a colour."]

    async def main():
        try:
            return await llm.agenerate(
                [[{"role": "user", "content": p}] for p in prompts], SamplingParams(max_tokens=6, temperature=0)
            )
        finally:
            await llm.aclose()

    out = asyncio.run(main())
    assert len(out) == 4 and all(c.text.strip() for c in out)
    assert llm.stats["succeeded"] >= 4 and llm.stats["failed"] == 0


def test_greedy_answer_matches_the_local_backend(served):
    """Same weights, same chat template, greedy: the server and the in-process backend agree."""
    model, base_url = served
    remote = load_llm(f"openai:{model}@{base_url}", cache=False, timeout_s=60, max_retries=1)
    local = load_llm("embedded", cache=False)
    msgs = [{"role": "user", "content": "I lost my job today. What should I do?"}]
    params = SamplingParams(max_tokens=8, temperature=0)
    r, l = remote.chat(msgs, params), local.chat(msgs, params)
    assert r.text.split()[:4] == l.text.split()[:4], (r.text, l.text)
