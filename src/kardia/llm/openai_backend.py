"""Any OpenAI-compatible server (vLLM, SGLang, `transformers serve`, llama.cpp, Ollama, hosted APIs).

A lean client: kept-alive `httpx` connections posting the request JSON directly (the official `openai`
client builds many objects per call), spread over small pools (`ClientPool`), and retries that are ours
alone, so they are counted:
- concurrency that follows the batch it is given (every request of a batch in flight at once), or at
  most `max_concurrency` requests on the wire when a limit is set (one semaphore per event loop),
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
import contextlib
import itertools
import os
import json
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


class APIError(Exception):
    """A failed attempt (named like the `openai` client's errors, so messages read the same)."""


class APIStatusError(APIError):
    def __init__(self, status_code: int, message: str, headers):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers


class BadRequestError(APIStatusError): ...
class AuthenticationError(APIStatusError): ...
class PermissionDeniedError(APIStatusError): ...
class NotFoundError(APIStatusError): ...
class ConflictError(APIStatusError): ...
class UnprocessableEntityError(APIStatusError): ...
class RateLimitError(APIStatusError): ...
class InternalServerError(APIStatusError): ...
class APITimeoutError(APIError): ...
class APIConnectionError(APIError): ...


_STATUS_ERRORS = {400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
                  409: ConflictError, 422: UnprocessableEntityError, 429: RateLimitError}


def _status_error(status: int, text: str, headers) -> APIStatusError:
    cls = _STATUS_ERRORS.get(status) or (InternalServerError if status >= 500 else APIStatusError)
    return cls(status, f"Error code: {status} - {text[:500]}", headers)


class OpenAILLM(LLM):
    def __init__(
        self,
        model: str,
        base_urls: Sequence[str],
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int | None = None,
        rpm: float | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
    ):
        if not base_urls:
            raise ValueError("OpenAILLM needs at least one base URL")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.model = model
        self.base_urls = list(base_urls)
        self._endpoints = [u.rstrip("/") + "/chat/completions" for u in self.base_urls]
        self.name = f"openai:{model}@{','.join(self.base_urls)}"
        self.api_key = os.environ.get(api_key_env) or "EMPTY"
        self.max_concurrency = int(max_concurrency) if max_concurrency is not None else None  # None: the batch
        self.rpm = rpm
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self._url_cycle = itertools.cycle(range(len(self.base_urls)))
        # the client, semaphore and limiter belong to one event loop; closed loops' sets are pruned
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
            sem = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
            state = (ClientPool(self.api_key, self.timeout_s), sem, RateLimiter(self.rpm))
            self._per_loop[loop] = state
        return state

    def generate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        """Sync call on a fresh event loop; its HTTP client is closed before the loop ends."""

        async def run() -> list[Completion]:
            try:
                return await self.agenerate(batch, params)
            finally:
                await self.aclose()

        return run_sync(run())

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        return list(await asyncio.gather(*(self._one(m, params) for m in batch)))

    def _body(self, messages: Conversation, params: SamplingParams) -> bytes:
        body: dict = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    async def _post(self, pool: "ClientPool", url: str, content: bytes) -> Completion:
        """One attempt: POST, status check, parse; every failure is an `APIError` or `_Malformed`."""
        import httpx

        try:
            async with asyncio.timeout(self.timeout_s), pool.client() as client:
                resp = await client.post(url, content=content)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise APITimeoutError(f"Request timed out after {self.timeout_s} s") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(f"Connection error: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise _status_error(resp.status_code, resp.text, resp.headers)
        try:
            data = json.loads(resp.content)
        except ValueError as exc:
            raise _Malformed(f"response is not JSON: {resp.content[:200]!r}") from exc
        return _to_completion(data)

    async def _one(self, messages: Conversation, params: SamplingParams) -> Completion:
        pool, sem, limiter = self._state()
        content = self._body(messages, params)
        last_error: BaseException | None = None
        first_url = next(self._url_cycle)
        for attempt in range(self.max_retries + 1):
            url_index = (first_url + attempt) % len(self._endpoints)
            retry_after: float | None = None
            if sem is not None:
                await sem.acquire()
            try:
                await limiter.wait()
                self.stats["attempts"] += 1
                try:
                    completion = await self._post(pool, self._endpoints[url_index], content)
                    self.stats["succeeded"] += 1
                    return completion
                except APIStatusError as exc:
                    if exc.status_code < 500 and exc.status_code not in RETRYABLE_STATUS:
                        self.stats["failed"] += 1
                        raise LLMError(
                            f"{self.name}: HTTP {exc.status_code} from {self.base_urls[url_index]} (not retried): {exc.message}"
                        ) from exc
                    last_error = exc
                    retry_after = _retry_after(exc)
                except (APITimeoutError, APIConnectionError) as exc:
                    last_error = exc  # hung or dropped: the server may be fine on the next try
                except (APIError, _Malformed, ValueError) as exc:
                    last_error = exc  # malformed body (bad JSON, missing fields): a server may recover
            finally:
                if sem is not None:
                    sem.release()
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
            await state[0].aclose()


class ClientPool:
    """Kept-alive HTTP clients of at most `per_client` requests in flight each, made as concurrency needs.

    Why: httpcore's connection pool scans every connection for every queued request (quadratic in the
    requests in flight; at 64 in flight it was most of the client's CPU). Small pools keep that scan short.
    """

    def __init__(self, api_key: str, timeout_s: float, per_client: int = 8):
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.per_client = per_client
        self._clients: list = []
        self._in_flight: list[int] = []
        self._ssl = None  # one SSL context for every client (building one per client costs ~10 ms)
        # the first client now, before any request start is timed (the rate limiter spaces starts)
        self._clients.append(self._new_client())
        self._in_flight.append(0)

    def _new_client(self):
        import httpx

        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s), verify=self._ssl,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=self.per_client),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )

    @contextlib.asynccontextmanager
    async def client(self):
        """The first client with room, a new one when all are full; held for one request."""
        i = next((k for k, n in enumerate(self._in_flight) if n < self.per_client), len(self._clients))
        if i == len(self._clients):
            self._clients.append(self._new_client())
            self._in_flight.append(0)
        self._in_flight[i] += 1
        try:
            yield self._clients[i]
        finally:
            self._in_flight[i] -= 1

    async def aclose(self) -> None:
        for c in self._clients:
            await c.aclose()
        self._clients.clear()
        self._in_flight.clear()


class _Malformed(Exception):
    """A 200 response that is not a usable chat completion."""


def _to_completion(resp: dict) -> Completion:
    choices = resp.get("choices") if isinstance(resp, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise _Malformed(f"response has no choices: {str(resp)[:200]!r}")
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else None
    if not isinstance(text, str):
        raise _Malformed(f"response has no message content: {str(resp)[:200]!r}")
    usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
    return Completion(
        text=text,
        prompt_tokens=usage.get("prompt_tokens", 0) or 0,
        completion_tokens=usage.get("completion_tokens", 0) or 0,
        finish_reason=choice.get("finish_reason") or "stop",
    )


def _retry_after(exc: APIStatusError) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header; HTTP dates fall back to backoff."""
    try:
        headers = exc.headers
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return min(float(ms) / 1000.0, 60.0)
        value = headers.get("retry-after")
        return min(max(float(value), 0.0), 60.0) if value is not None else None
    except Exception:
        return None
