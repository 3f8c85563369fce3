"""Start a REAL `transformers serve` (the HF OpenAI-compatible server) as a subprocess on 127.0.0.1.

Used by tests and benchmarks to exercise the openai backend against a real server. It works offline on
a local model folder; the server is pinned to that folder, so requests must name the folder path as
their model (`openai:<folder>@<base_url>`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


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


class TransformersServe:
    """`with TransformersServe(folder) as srv: load_llm(srv.model_string())`."""

    def __init__(self, model_dir: str, log_path: str | Path | None = None, startup_timeout_s: float = 120.0,
                 extra_args: list[str] | None = None):
        self.model_dir = str(model_dir)
        self.port = _free_port()
        self.log_path = Path(log_path) if log_path else Path(os.environ.get("TMPDIR", "/tmp")) / f"transformers-serve-{self.port}.log"
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def model_string(self) -> str:
        return f"openai:{self.model_dir}@{self.base_url}"

    def start(self) -> "TransformersServe":
        import httpx

        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = transformers_cli() + [
            "serve", self.model_dir, "--host", "127.0.0.1", "--port", str(self.port),
            "--device", "cpu", "--dtype", "float32", "--log-level", "warning", *self.extra_args,
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        health = f"http://127.0.0.1:{self.port}/health"
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(health, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"transformers serve gave no /health in {self.startup_timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "TransformersServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
