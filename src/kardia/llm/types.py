"""The vocabulary every model backend speaks: messages in, completions out."""

from __future__ import annotations

import asyncio
import hashlib
import json
from abc import ABC, abstractmethod
from typing import Literal, Sequence

from pydantic import BaseModel, Field

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}
Conversation = Sequence[Message]


class SamplingParams(BaseModel):
    """How to sample. A call is deterministic (and so cacheable) when greedy or seeded."""

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0 or self.seed is not None

    def batch_key(self) -> tuple:
        """Requests with the same key can share one batched generate call."""
        return (self.max_tokens, self.temperature, self.top_p, self.seed, tuple(self.stop))


class Completion(BaseModel):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["stop", "length", "error"] | str = "stop"
    cached: bool = False


class LLMError(RuntimeError):
    """A model call failed for good (after the last retry): never a silent empty answer."""


class LLM(ABC):
    """One model behind one string. Async first; `generate` is the sync wrapper."""

    name: str
    # The model gives next-token probabilities (`anext_token_probs`, `anext_token_probs_shared`,
    # `asequence_logprobs`): local backends do, remote ones answer text only. Callers ask this, once.
    token_probs: bool = False

    @abstractmethod
    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        ...

    async def achat(self, messages: Conversation, params: SamplingParams | None = None) -> Completion:
        return (await self.agenerate([messages], params))[0]

    def generate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        return run_sync(self.agenerate(batch, params))

    def chat(self, messages: Conversation, params: SamplingParams | None = None) -> Completion:
        return self.generate([messages], params)[0]

    async def aclose(self) -> None:  # pragma: no cover - default no-op
        return None


def request_key(model: str, messages: Conversation, params: SamplingParams) -> str:
    """Stable hash of everything that determines an answer."""
    payload = json.dumps(
        {"model": model, "messages": [dict(m) for m in messages], "params": params.model_dump()},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def run_sync(coro):
    """Run a coroutine from sync code, also when called inside a running loop's thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
