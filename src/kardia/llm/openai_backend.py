"""Any OpenAI-compatible server (vLLM, SGLang, `transformers serve`, llama.cpp, Ollama, hosted APIs).

Bounded concurrency, optional requests-per-minute limit, a per-call timeout, retries with backoff on
429 / 5xx / timeouts / dropped connections (honouring Retry-After), several base URLs spread
round-robin, and an explicit `LLMError` after the last retry: never a silent empty answer.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from typing import Sequence

from .types import LLM, Completion, Conversation, LLMError, SamplingParams


class RateLimiter:
    """At most `rpm` request starts in any 60-second window (sliding log)."""

    def __init__(self, rpm: float | None):
        self.rpm = rpm
        self._starts: list[float] = []
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.rpm:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._starts = [t for t in self._starts if now - t < 60.0]
                if len(self._starts) < self.rpm:
                    self._starts.append(now)
                    return
                await asyncio.sleep(60.0 - (now - self._starts[0]) + 0.001)


class OpenAILLM(LLM):
    def __init__(
        self,
        model: str,
        base_urls: Sequence[str],
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 32,
        rpm: float | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
    ):
        self.model = model
        self.base_urls = list(base_urls)
        self.name = f"openai:{model}@{','.join(self.base_urls)}"
        self.api_key = os.environ.get(api_key_env) or "EMPTY"
        self.max_concurrency = max_concurrency
        self.rpm = rpm
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._url_cycle = itertools.cycle(range(len(self.base_urls)))
        self._per_loop: dict[int, tuple] = {}
        self.calls = 0
        self.retries = 0

    def _state(self):
        """Clients and semaphores belong to one event loop; keep one set per loop."""
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(id(loop))
        if state is None or state[0] is not loop:
            from openai import AsyncOpenAI

            clients = [
                AsyncOpenAI(base_url=u, api_key=self.api_key, timeout=self.timeout_s, max_retries=0)
                for u in self.base_urls
            ]
            state = (loop, clients, asyncio.Semaphore(self.max_concurrency), RateLimiter(self.rpm))
            self._per_loop[id(loop)] = state
        return state

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        return list(await asyncio.gather(*(self._one(m, params) for m in batch)))

    async def _one(self, messages: Conversation, params: SamplingParams) -> Completion:
        import openai

        _, clients, sem, limiter = self._state()
        kwargs = dict(
            model=self.model,
            messages=[dict(m) for m in messages],
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
        )
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        last_error: Exception | None = None
        for attempt in range(self.max_retries + 1):
            client = clients[next(self._url_cycle)]
            retry_after: float | None = None
            async with sem:
                await limiter.wait()
                self.calls += 1
                try:
                    resp = await asyncio.wait_for(client.chat.completions.create(**kwargs), timeout=self.timeout_s)
                    choice = resp.choices[0]
                    text = choice.message.content
                    if text is None:
                        raise LLMError("response has no message content")
                    usage = resp.usage
                    return Completion(
                        text=text,
                        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                        finish_reason=choice.finish_reason or "stop",
                    )
                except openai.RateLimitError as exc:
                    last_error = exc
                    retry_after = _retry_after(exc)
                except openai.APIStatusError as exc:
                    if exc.status_code < 500 and exc.status_code not in (408, 409):
                        raise LLMError(f"{self.name}: HTTP {exc.status_code}: {exc.message}") from exc
                    last_error = exc
                    retry_after = _retry_after(exc)
                except (openai.APITimeoutError, openai.APIConnectionError, asyncio.TimeoutError) as exc:
                    last_error = exc
                except (LLMError, ValueError, AttributeError, IndexError, TypeError) as exc:
                    # malformed body (bad JSON, missing fields): retryable, a server may recover
                    last_error = exc
            if attempt < self.max_retries:
                self.retries += 1
                delay = retry_after if retry_after is not None else min(
                    self.max_backoff_s, self.backoff_s * (2**attempt)
                ) * (0.5 + random.random() / 2)
                await asyncio.sleep(delay)
        raise LLMError(
            f"{self.name}: gave up after {self.max_retries + 1} attempts; last error: {type(last_error).__name__}: {last_error}"
        )

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        state = self._per_loop.pop(id(loop), None)
        if state:
            for c in state[1]:
                await c.close()


def _retry_after(exc) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(float(value), 60.0) if value is not None else None
    except Exception:
        return None
