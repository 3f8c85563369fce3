"""Any OpenAI-compatible server (vLLM, SGLang, `transformers serve`, llama.cpp, Ollama, hosted APIs).

Through the official `openai` client (its own retries off, so ours are the only ones and are counted):
- bounded concurrency (one semaphore per event loop, held only while a request is on the wire),
- an optional requests-per-minute limit, enforced by spacing request starts 60/rpm seconds apart
  (never a burst of `rpm` requests then a one-minute stall, which servers punish),
- a per-call timeout,
- retries with jittered exponential backoff on 429 / 408 / 409 / 5xx / timeouts / dropped connections /
  malformed bodies, honouring `Retry-After`; other 4xx fail at once (retrying a bad request is waste),
- several base URLs spread round-robin (a retry moves on to the next URL, so one dead server costs one
  attempt, not all of them),
- an explicit `LLMError` after the last retry: never a silent empty answer.
`stats` counts attempts, retries, successes and failures so callers (and tests) can account for every
request.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from typing import Sequence

from .types import LLM, Completion, Conversation, LLMError, SamplingParams, run_sync

RETRYABLE_STATUS = {408, 409, 429}


class RateLimiter:
    """Request starts spaced at least 60/rpm seconds apart (a token bucket of size one)."""

    def __init__(self, rpm: float | None):
        self.interval = 60.0 / rpm if rpm else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


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
        if not base_urls:
            raise ValueError("OpenAILLM needs at least one base URL")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.model = model
        self.base_urls = list(base_urls)
        self.name = f"openai:{model}@{','.join(self.base_urls)}"
        self.api_key = os.environ.get(api_key_env) or "EMPTY"
        self.max_concurrency = int(max_concurrency)
        self.rpm = rpm
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._url_cycle = itertools.cycle(range(len(self.base_urls)))
        # clients, semaphore and limiter belong to one event loop; closed loops' sets are pruned
        self._per_loop: dict = {}
        self.stats = {"attempts": 0, "retries": 0, "succeeded": 0, "failed": 0}

    @property
    def calls(self) -> int:
        return self.stats["attempts"]

    @property
    def retries(self) -> int:
        return self.stats["retries"]

    def _state(self):
        loop = asyncio.get_running_loop()
        state = self._per_loop.get(loop)
        if state is None:
            for old in [lp for lp in self._per_loop if lp.is_closed()]:
                del self._per_loop[old]
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient

            # our own httpx client: openai's default one schedules its close on whatever loop is running
            # when it is garbage-collected, which fails ("Event loop is closed") for a finished loop
            clients = [
                AsyncOpenAI(
                    base_url=u, api_key=self.api_key, timeout=self.timeout_s, max_retries=0,
                    http_client=DefaultAsyncHttpxClient(timeout=self.timeout_s),
                )
                for u in self.base_urls
            ]
            state = (clients, asyncio.Semaphore(self.max_concurrency), RateLimiter(self.rpm))
            self._per_loop[loop] = state
        return state

    def generate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        """Sync call on a fresh event loop; its HTTP clients are closed before the loop ends."""

        async def run() -> list[Completion]:
            try:
                return await self.agenerate(batch, params)
            finally:
                await self.aclose()

        return run_sync(run())

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        return list(await asyncio.gather(*(self._one(m, params) for m in batch)))

    async def _one(self, messages: Conversation, params: SamplingParams) -> Completion:
        import openai

        clients, sem, limiter = self._state()
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
        last_error: BaseException | None = None
        first_url = next(self._url_cycle)
        for attempt in range(self.max_retries + 1):
            url_index = (first_url + attempt) % len(clients)
            client = clients[url_index]
            retry_after: float | None = None
            async with sem:
                await limiter.wait()
                self.stats["attempts"] += 1
                try:
                    resp = await asyncio.wait_for(client.chat.completions.create(**kwargs), timeout=self.timeout_s)
                    completion = _to_completion(resp)
                    self.stats["succeeded"] += 1
                    return completion
                except openai.APIStatusError as exc:
                    if exc.status_code < 500 and exc.status_code not in RETRYABLE_STATUS:
                        self.stats["failed"] += 1
                        raise LLMError(
                            f"{self.name}: HTTP {exc.status_code} from {self.base_urls[url_index]} (not retried): {exc.message}"
                        ) from exc
                    last_error = exc
                    retry_after = _retry_after(exc)
                except (openai.APITimeoutError, openai.APIConnectionError, asyncio.TimeoutError) as exc:
                    last_error = exc  # hung or dropped: the server may be fine on the next try
                except (openai.APIError, _Malformed, ValueError) as exc:
                    last_error = exc  # malformed body (bad JSON, missing fields): a server may recover
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                if retry_after is not None:
                    delay = retry_after
                else:
                    delay = min(self.max_backoff_s, self.backoff_s * (2**attempt)) * (0.5 + random.random() / 2)
                await asyncio.sleep(delay)
        self.stats["failed"] += 1
        raise LLMError(
            f"{self.name}: gave up after {self.max_retries + 1} attempts; "
            f"last error: {type(last_error).__name__}: {last_error}"
        ) from last_error

    async def aclose(self) -> None:
        state = self._per_loop.pop(asyncio.get_running_loop(), None)
        if state:
            for c in state[0]:
                await c.close()


class _Malformed(Exception):
    """A 200 response that is not a usable chat completion."""


def _to_completion(resp) -> Completion:
    choices = getattr(resp, "choices", None)
    if not choices:
        raise _Malformed(f"response has no choices: {str(resp)[:200]!r}")
    choice = choices[0]
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None)
    if not isinstance(text, str):
        raise _Malformed(f"response has no message content: {str(resp)[:200]!r}")
    usage = getattr(resp, "usage", None)
    return Completion(
        text=text,
        prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
        completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
        finish_reason=getattr(choice, "finish_reason", None) or "stop",
    )


def _retry_after(exc) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header; HTTP dates fall back to backoff."""
    try:
        headers = exc.response.headers
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return min(float(ms) / 1000.0, 60.0)
        value = headers.get("retry-after")
        return min(max(float(value), 0.0), 60.0) if value is not None else None
    except Exception:
        return None
