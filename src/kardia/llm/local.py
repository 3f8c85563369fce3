"""In-process transformers backend with micro-batching.

One worker thread owns the model. Callers (async or sync, from any loop) drop requests into a
queue; the worker gathers whatever arrives within a short window (same sampling parameters) into
one left-padded `generate` call. Twenty dialogues in flight therefore share one forward pass
instead of queueing one by one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from .types import LLM, Completion, Conversation, LLMError, SamplingParams


@dataclass
class _Request:
    kind: str  # "generate" | "probs"
    messages: Conversation
    params: SamplingParams | None
    future: concurrent.futures.Future
    extra: dict = field(default_factory=dict)

    def key(self) -> tuple:
        if self.kind == "generate":
            return ("generate",) + self.params.batch_key()  # type: ignore[union-attr]
        return ("probs", self.extra["prefix"], tuple(self.extra["candidates"]))


class LocalLLM(LLM):
    def __init__(self, path: str, name: str | None = None, max_batch: int = 32, gather_ms: float = 15.0):
        self.path = str(path)
        self.name = name or self.path
        self.max_batch = max_batch
        self.gather_s = gather_ms / 1000.0
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._model = None
        self._tokenizer = None
        self._load_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches_run = 0

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tok = AutoTokenizer.from_pretrained(self.path)
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
                model.eval()
                self._tokenizer, self._model = tok, model
        return self._model, self._tokenizer

    @property
    def model(self):
        return self.load()[0]

    @property
    def tokenizer(self):
        return self.load()[1]

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._load_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._worker, name=f"kardia-local-{id(self)}", daemon=True)
                    self._thread.start()

    # -- public API ----------------------------------------------------------------------------
    def submit(self, messages: Conversation, params: SamplingParams) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Request("generate", list(messages), params, fut))
        self._ensure_worker()
        return fut

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        futures = [self.submit(m, params) for m in batch]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    async def anext_token_probs(
        self, batch: Sequence[Conversation], candidates: Sequence[str], assistant_prefix: str = ""
    ) -> list[dict[str, float]]:
        """Probability of each candidate as the next token after the assistant's `assistant_prefix`.

        Used by the judge's probability scorer (candidates "1".."5"): continuous, never unparseable.
        Returned probabilities are renormalised over the candidates.
        """
        futs = []
        for m in batch:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put(
                _Request("probs", list(m), None, fut, {"prefix": assistant_prefix, "candidates": list(candidates)})
            )
            futs.append(fut)
        self._ensure_worker()
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futs)))

    # -- worker --------------------------------------------------------------------------------
    def _worker(self) -> None:
        pending: list[_Request] = []
        while True:
            if not pending:
                try:
                    pending.append(self._queue.get(timeout=60))
                except queue.Empty:
                    return  # idle: the thread ends and restarts on the next request
            deadline = time.monotonic() + self.gather_s
            while len(pending) < self.max_batch * 4:
                timeout = deadline - time.monotonic()
                try:
                    pending.append(self._queue.get(timeout=max(timeout, 0)) if timeout > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            key = pending[0].key()
            group = [r for r in pending if r.key() == key][: self.max_batch]
            pending = [r for r in pending if r not in group]
            try:
                if key[0] == "generate":
                    results = self._generate(group)
                else:
                    results = self._probs(group)
                for req, res in zip(group, results):
                    req.future.set_result(res)
            except BaseException as exc:  # one failing batch fails its callers explicitly
                for req in group:
                    if not req.future.done():
                        req.future.set_exception(LLMError(f"local model {self.name}: {exc!r}"))
            self.batches_run += 1

    def _prompt_texts(self, group: Sequence[_Request], tok, prefix: str = "") -> list[str]:
        return [tok.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False) + prefix for r in group]

    def _generate(self, group: Sequence[_Request]) -> list[Completion]:
        import torch

        model, tok = self.load()
        params: SamplingParams = group[0].params  # type: ignore[assignment]
        texts = self._prompt_texts(group, tok)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_tokens,
            pad_token_id=tok.pad_token_id,
            do_sample=params.temperature > 0,
        )
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        results = []
        eos_ids = _eos_ids(model, tok)
        for i in range(len(group)):
            new = out[i, prompt_len:].tolist()
            while new and new[-1] == tok.pad_token_id and tok.pad_token_id not in eos_ids:
                new.pop()
            n_new = len([t for t in new if t != tok.pad_token_id]) or len(new)
            ended_eos = any(t in eos_ids for t in new)
            text = tok.decode(new, skip_special_tokens=True)
            finish = "stop" if ended_eos else "length"
            for s in params.stop:
                idx = text.find(s)
                if idx >= 0:
                    text = text[:idx]
                    finish = "stop"
            if finish == "length" and n_new < params.max_tokens:
                finish = "stop"
            prompt_tokens = int(enc["attention_mask"][i].sum().item())
            results.append(
                Completion(text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=n_new, finish_reason=finish)
            )
        return results

    def _probs(self, group: Sequence[_Request]) -> list[dict[str, float]]:
        import torch

        model, tok = self.load()
        prefix = group[0].extra["prefix"]
        candidates = group[0].extra["candidates"]
        cand_ids = []
        for c in candidates:
            ids = tok.encode(c, add_special_tokens=False)
            cand_ids.append(ids[0])
        enc = tok(self._prompt_texts(group, tok, prefix), return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            logits = model(**enc).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)[:, cand_ids]
        probs = probs / probs.sum(dim=-1, keepdim=True)
        return [{c: float(p) for c, p in zip(candidates, row.tolist())} for row in probs]


def _eos_ids(model, tok) -> set[int]:
    ids: set[int] = set()
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids
