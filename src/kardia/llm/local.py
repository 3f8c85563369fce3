"""In-process transformers backend with micro-batching.

One worker thread owns the model. Callers (async from any event loop, or sync from any thread) drop
requests into a queue; the worker batches them continuously:
- a burst forms one batch: after the first request of an idle spell the worker keeps gathering while
  requests keep coming (each within `gather_ms` of the previous, `gather_max_ms` at most, or until a
  full batch is there), so N callers that start together run as one batch of N, not [1, N-1];
- requests that arrive while a batch runs join the next batch, which starts as soon as the running
  one ends (at most one `gather_ms` gap later, or at once when they fill a batch);
- when more requests wait than one batch holds, the oldest one always goes, with the waiting
  requests of the most similar prompt length (less left padding, less wasted compute).
Generation and every scoring kind (next-token probabilities, whole-label log-probabilities,
shared-prefix scoring) go through the same queue, so the emotion reading of many turns in flight is
one forward pass. Requests share a batch when their `max_tokens` and `stop` match; temperature,
top_p and seed are applied per row by `_RowSampler`, so greedy, sampled and seeded requests mix
freely, and a seeded request draws from its own generator: its text does not depend on what else
happened to share its batch (up to float noise from padding), which is what makes seeded calls
cacheable. A failing batch raises `LLMError` in every caller waiting on it; none is left hanging.
The worker is a daemon thread that exits after `idle_exit_s` without work and restarts on demand.

Speed, measured on an earlier 2-core AMD EPYC (AVX2, no AVX-512/AMX) with SmolLM2-135M
(benchmarks/llm_throughput.py has the table):
- Decoding at batch 1 is memory-bandwidth bound: every token streams all 540 MB of float32 weights
  (~70 ms/token, ~14 tokens/s). One vs two torch threads makes no difference; sdpa vs eager
  attention is within noise at batch 1; HF `stop_strings` cost nothing measurable.
- Batching is the big win: the weights are read once per step for all rows (raw generate, 120 new
  tokens: batch 8 gives ~59 tokens/s, ~4x batch 1). Batch 32 gave less (~48 tokens/s): its step time
  grows from ~350 ms to ~900 ms as the sequence grows (likely the dynamic KV cache being re-allocated
  and copied every step; a static cache is the thing to try next).
- bfloat16 is a trap on that CPU: ~1.3x faster at batch 1, but 2-5x SLOWER at batch 8-32 (no native
  bf16 matmul, so every product converts). On a CPU WITH native bf16 (AVX512-BF16) it is ~3x faster
  everywhere, so `dtype="auto"` (the default) measures which one this machine has (`precision.py`).
- Through this backend (benchmarks/llm_throughput.py, 32 new tokens, greedy, this 2-core machine,
  nice'd and shared): 15.6 tokens/s with one caller, 55.7 with 8 concurrent callers (one batch of 8),
  135 with 32 (one batch of 32): 8.6x one caller, and within 6% of plain `model.generate` on the same
  prompts as one batch (59.4 and 138 tokens/s), so the batch itself is the ceiling. `transformers
  serve` (no continuous batching) stays at ~13-14 tokens/s whatever the concurrency.
- The first generate call in a process is ~1.5x slower than later ones (one-time warm-up).
- The "18 s per 120 tokens" first seen was that warm-up plus a CPU shared with other jobs: warm and
  alone it is ~8.5 s (14 tokens/s).
- Left-padded batched greedy decoding matches one-at-a-time decoding (checked in tests on the first
  tokens; exact equality over long outputs is not guaranteed, padding changes float rounding).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from .types import LLM, Completion, Conversation, LLMError, SamplingParams


SHARED_ROWS = 40  # branches per pass of shared-prefix scoring (each holds a copy of the prefix's KV cache)


@dataclass(eq=False)
class _Request:
    kind: str  # "generate" | "probs"
    messages: Conversation
    params: SamplingParams | None
    future: concurrent.futures.Future
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Prompt length in characters: cheap, and enough to put similar lengths in one batch."""
        convs = self.extra["branches"] if self.kind == "shared" else [self.messages]
        return sum(len(str(m.get("content", ""))) for c in convs for m in c)

    def key(self) -> tuple:
        if self.kind == "generate":
            p = self.params
            return ("generate", p.max_tokens, tuple(p.stop))  # type: ignore[union-attr]
        if self.kind == "shared":  # one request holds k conversations; requests with the same k batch
            return (self.kind, self.extra["prefix"], tuple(self.extra["candidates"]), len(self.extra["branches"]))
        return (self.kind, self.extra["prefix"], tuple(self.extra["candidates"]))


class LocalLLM(LLM):
    token_probs = True  # the logits are here: next-token probabilities for judges, critics, label readers

    def __init__(
        self,
        path: str,
        name: str | None = None,
        max_batch: int = 32,
        gather_ms: float = 5.0,
        dtype: str = "auto",
        idle_exit_s: float = 30.0,
        gather_max_ms: float = 50.0,
    ):
        self.path = str(path)
        self.name = name or self.path
        self.max_batch = int(max_batch)
        self.gather_s = gather_ms / 1000.0  # a burst: the next request comes within this of the previous one
        self.gather_max_s = max(gather_max_ms, gather_ms) / 1000.0  # the longest a first request waits for company
        self.dtype = dtype
        self.idle_exit_s = idle_exit_s
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._model = None
        self._tokenizer = None
        self._load_lock = threading.Lock()
        self._worker_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.batches_run = 0
        self.loaded_dtype: str | None = None
        self.autocast_bf16 = False
        self.batch_sizes: list[int] = []  # rows per generate/probs call, in order (for tests and tuning)

    # -- loading -----------------------------------------------------------------------------
    def load(self) -> tuple[Any, Any]:
        with self._load_lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer
                # imported here, under the load lock: transformers' lazy module can fail an import made
                # for the first time from the worker thread while another thread imports from it
                from transformers import LogitsProcessorList  # noqa: F401

                tok = AutoTokenizer.from_pretrained(self.path)
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                from .precision import inference_dtype

                self.loaded_dtype, self.autocast_bf16 = inference_dtype(self.dtype)
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=getattr(torch, self.loaded_dtype))
                model.eval()
                self._tokenizer, self._model = tok, model
        return self._model, self._tokenizer

    def _compute(self):
        """The context every forward pass runs in: inference mode, plus bf16 autocast where chosen."""
        import contextlib

        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.autocast_bf16:
            stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        return stack

    @property
    def model(self):
        return self.load()[0]

    @property
    def tokenizer(self):
        return self.load()[1]

    # -- worker lifecycle --------------------------------------------------------------------
    def _enqueue(self, req: _Request) -> None:
        self._queue.put(req)
        with self._worker_lock:  # the worker only exits under this lock, after seeing an empty queue
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, name=f"kardia-local-{self.name}", daemon=True)
                self._thread.start()

    @property
    def worker_alive(self) -> bool:
        t = self._thread
        return t is not None and t.is_alive()

    def close(self, timeout: float = 60.0) -> None:
        """Let the worker finish the queued work and exit now (the next request starts a new one).

        The loaded weights stay: instances are shared between roles, so closing never breaks them.
        """
        t = self._thread
        if t is not None:
            self._queue.put(None)  # type: ignore[arg-type]
            t.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- public API ----------------------------------------------------------------------------
    def submit(self, messages: Conversation, params: SamplingParams) -> concurrent.futures.Future:
        """Queue one conversation; the future resolves to a Completion (or LLMError)."""
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {params.max_tokens}")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._enqueue(_Request("generate", list(messages), params, fut))
        return fut

    async def agenerate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        futures = [self.submit(m, params) for m in batch]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def generate(self, batch: Sequence[Conversation], params: SamplingParams | None = None) -> list[Completion]:
        """Sync: safe from any thread; concurrent threads' requests are batched together too."""
        params = params or SamplingParams()
        futures = [self.submit(m, params) for m in batch]
        return [f.result() for f in futures]

    async def anext_token_probs(
        self, batch: Sequence[Conversation], candidates: Sequence[str], assistant_prefix: str = ""
    ) -> list[dict[str, float]]:
        """Probability of each candidate as the next token after the assistant's `assistant_prefix`.

        Used by the judge's probability scorer (candidates "1".."5"): continuous, never unparseable.
        Returned probabilities are renormalised over the candidates. Each candidate counts by its
        first token; candidates sharing a first token are an error (they cannot be told apart).
        """
        return await self._score("probs", batch, candidates, assistant_prefix)

    async def _score(self, kind: str, batch: Sequence[Conversation], candidates: Sequence[str], prefix: str) -> list:
        """Queue one scoring request per conversation; requests with the same candidates share a pass."""
        if not candidates:
            raise ValueError(f"{kind} scoring needs at least one candidate")
        futs = []
        for m in batch:
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._enqueue(_Request(kind, list(m), None, fut, {"prefix": prefix, "candidates": list(candidates)}))
            futs.append(fut)
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futs)))

    async def anext_token_probs_shared(
        self, batch: Sequence[Conversation], candidates: Sequence[str], assistant_prefix: str = ""
    ) -> list[dict[str, float]]:
        """`anext_token_probs` for conversations that share a long beginning (a judge's one prompt per
        rubric dimension around the same quoted reply): the common token prefix runs ONCE, its KV cache
        is shared by every branch, and only each branch's own tail is computed. Same probabilities as
        `anext_token_probs` up to float rounding; the saving is the shared share of the prompt."""
        if not candidates:
            raise ValueError("shared scoring needs at least one candidate")
        if not batch:
            return []
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._enqueue(_Request("shared", [], None, fut, {"prefix": assistant_prefix, "candidates": list(candidates),
                                                          "branches": [list(m) for m in batch]}))
        return await asyncio.wrap_future(fut)

    async def asequence_logprobs(
        self, batch: Sequence[Conversation], candidates: Sequence[str], assistant_prefix: str = ""
    ) -> list[dict[str, float]]:
        """Log-probability of each candidate's WHOLE token sequence after the assistant's `assistant_prefix`.

        Unlike `anext_token_probs`, a label that splits into several tokens ("apprehensive") is scored
        by the product of all its token probabilities, so labels of different lengths compare fairly.
        The prompt runs once; its KV cache is shared by the candidates.
        """
        return await self._score("seqlogp", batch, candidates, assistant_prefix)

    # -- worker --------------------------------------------------------------------------------
    def _worker(self) -> None:
        pending: list[_Request] = []
        exiting = False  # close() asked us to stop once the queue is drained
        while True:
            if not pending and self._queue.empty():  # idle: wait for a request
                try:
                    item = self._queue.get_nowait() if exiting else self._queue.get(timeout=self.idle_exit_s)
                except queue.Empty:
                    with self._worker_lock:
                        if self._queue.empty():  # nothing slipped in: exit; the next request restarts us
                            self._thread = None
                            return
                    continue
                if item is None:
                    exiting = True
                    continue
                pending.append(item)
            # what queued while the last batch ran joins the next one, plus a burst still arriving
            exiting = self._gather(pending) or exiting
            if not pending:  # only a close() marker was queued
                continue
            group = self._next_group(pending)
            taken = {id(r) for r in group}
            pending = [r for r in pending if id(r) not in taken]
            self._run_group(group[0].key(), group)

    def _drain(self, pending: list[_Request]) -> bool:
        """Take everything queued now without waiting; True when a close() marker was among it."""
        closing = False
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return closing
            if item is None:
                closing = True
            else:
                pending.append(item)

    def _gather(self, pending: list[_Request]) -> bool:
        """Take everything queued, then keep gathering while requests keep arriving (each within
        `gather_s` of the previous, `gather_max_s` at most) until the first request's batch is full:
        a burst forms one batch, and a batch starts at most `gather_s` after its last arrival.
        True when a close() marker came in."""
        closing = self._drain(pending)
        if not pending:
            return closing
        key = pending[0].key()
        same = sum(r.key() == key for r in pending)
        end = time.monotonic() + self.gather_max_s
        while same < self.max_batch:
            timeout = min(self.gather_s, end - time.monotonic())
            if timeout <= 0:
                break
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return closing
            if item is None:
                closing = True
                continue
            pending.append(item)
            same += item.key() == key
        return closing | self._drain(pending)

    def _next_group(self, pending: list[_Request]) -> list[_Request]:
        """The oldest request and, of those that can share its batch, the closest in prompt length."""
        first = pending[0]
        key = first.key()
        same = [r for r in pending[1:] if r.key() == key]
        if len(same) >= self.max_batch:
            size = first.size
            same.sort(key=lambda r: abs(r.size - size))  # stable: equal distances keep arrival order
        return [first] + same[: self.max_batch - 1]

    def _run_group(self, key: tuple, group: list[_Request]) -> None:
        # counted before the callers are released, so a caller that got its answer sees its batch counted
        self.batches_run += 1
        self.batch_sizes.append(len(group))
        try:
            run = {"generate": self._generate, "probs": self._probs, "seqlogp": self._seq_logprobs,
                   "shared": self._shared_probs}[key[0]]
            results = run(group)
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} requests")
            for req, res in zip(group, results):
                req.future.set_result(res)
        except BaseException as exc:  # one failing batch fails its callers explicitly, never silently
            err = LLMError(f"local model {self.name}: batch of {len(group)} failed: {exc!r}")
            err.__cause__ = exc
            for req in group:
                if not req.future.done():
                    req.future.set_exception(err)

    def _prompt_texts(self, group: Sequence[_Request], tok, prefix: str = "") -> list[str]:
        return [tok.apply_chat_template(list(r.messages), add_generation_prompt=True, tokenize=False) + prefix for r in group]

    def _generate(self, group: Sequence[_Request]) -> list[Completion]:
        from transformers import LogitsProcessorList

        model, tok = self.load()
        first: SamplingParams = group[0].params  # type: ignore[assignment]
        texts = self._prompt_texts(group, tok)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        eos_ids = _eos_ids(model, tok)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=first.max_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=sorted(eos_ids),
            do_sample=False,  # sampling happens per row in _RowSampler; generate then takes its pick
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if any(r.params.temperature > 0 for r in group):  # type: ignore[union-attr]
            kwargs["logits_processor"] = LogitsProcessorList([_RowSampler([r.params for r in group])])  # type: ignore[misc]
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=tok)
        with self._compute():
            out = model.generate(**enc, **kwargs)
        prompt_len = enc["input_ids"].shape[1]
        results = []
        for i in range(len(group)):
            new = out[i, prompt_len:].tolist()
            ended_eos = False
            for j, t in enumerate(new):
                if t in eos_ids:
                    new, ended_eos = new[: j + 1], True
                    break
            text = tok.decode(new, skip_special_tokens=True)
            finish = "stop" if ended_eos else ("length" if len(new) >= first.max_tokens else "stop")
            cut = min((idx for idx in (text.find(s) for s in first.stop) if idx >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            prompt_tokens = int(enc["attention_mask"][i].sum().item())
            results.append(
                Completion(text=text.strip(), prompt_tokens=prompt_tokens, completion_tokens=len(new), finish_reason=finish)
            )
        return results

    @staticmethod
    def _first_token_ids(tok, candidates: Sequence[str]) -> list[int]:
        cand_ids = []
        for c in candidates:
            ids = tok.encode(c, add_special_tokens=False)
            if not ids:
                raise ValueError(f"candidate {c!r} encodes to no token")
            cand_ids.append(ids[0])
        if len(set(cand_ids)) != len(cand_ids):
            raise ValueError(f"candidates {candidates} share first tokens {cand_ids}: they cannot be told apart")
        return cand_ids

    def _shared_probs(self, group: Sequence[_Request]) -> list[list[dict[str, float]]]:
        """Each request: k conversations; their common token prefix once, then the k tails on its cache."""
        k = len(group[0].extra["branches"])
        per = max(1, SHARED_ROWS // k)  # the shared cache is copied k times: bound the rows of one pass
        out: list[list[dict[str, float]]] = []
        for start in range(0, len(group), per):
            out.extend(self._shared_chunk(group[start:start + per]))
        return out

    def _shared_chunk(self, group: Sequence[_Request]) -> list[list[dict[str, float]]]:
        import torch

        model, tok = self.load()
        prefix = group[0].extra["prefix"]
        candidates = group[0].extra["candidates"]
        cand_ids = self._first_token_ids(tok, candidates)
        k = len(group[0].extra["branches"])
        heads, tails = [], []
        for req in group:
            texts = [tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False) + prefix
                     for m in req.extra["branches"]]
            ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
            n = min(len(x) for x in ids) - 1  # every tail keeps at least its last token
            common = 0
            while common < n and all(x[common] == ids[0][common] for x in ids):
                common += 1
            common = max(common, 1)
            heads.append(ids[0][:common])
            tails.extend(x[common:] for x in ids)
        pad = tok.pad_token_id
        width_h, width_t = max(map(len, heads)), max(map(len, tails))
        head_ids = torch.tensor([[pad] * (width_h - len(h)) + h for h in heads])  # left-padded
        head_mask = torch.tensor([[0] * (width_h - len(h)) + [1] * len(h) for h in heads])
        tail_ids = torch.tensor([t + [pad] * (width_t - len(t)) for t in tails])  # right-padded
        tail_mask = torch.tensor([[1] * len(t) + [0] * (width_t - len(t)) for t in tails])
        with self._compute():
            _, tail_logits = _heads_then_tails(model, head_ids, head_mask, tail_ids, tail_mask, k)
            logits = tail_logits[torch.arange(len(tails)), tail_mask.sum(-1) - 1, :]
        probs = torch.softmax(logits.float(), dim=-1)[:, cand_ids]
        probs = probs / probs.sum(dim=-1, keepdim=True)
        rows = [{c: float(p) for c, p in zip(candidates, row.tolist())} for row in probs]
        return [rows[i * k:(i + 1) * k] for i in range(len(group))]

    def _probs(self, group: Sequence[_Request]) -> list[dict[str, float]]:
        import torch

        model, tok = self.load()
        prefix = group[0].extra["prefix"]
        candidates = group[0].extra["candidates"]
        cand_ids = self._first_token_ids(tok, candidates)
        enc = tok(self._prompt_texts(group, tok, prefix), return_tensors="pt", padding=True, add_special_tokens=False)
        with self._compute():
            logits = model(**enc, logits_to_keep=1).logits[:, -1, :]
        probs = torch.softmax(logits.float(), dim=-1)[:, cand_ids]
        probs = probs / probs.sum(dim=-1, keepdim=True)
        return [{c: float(p) for c, p in zip(candidates, row.tolist())} for row in probs]

    def _seq_logprobs(self, group: Sequence[_Request]) -> list[dict[str, float]]:
        import torch

        model, tok = self.load()
        prefix = group[0].extra["prefix"]
        candidates = group[0].extra["candidates"]
        cand = [tok.encode(c, add_special_tokens=False) for c in candidates]
        if any(not ids for ids in cand):
            raise ValueError(f"a candidate of {candidates} encodes to no token")
        k, width = len(cand), max(len(ids) for ids in cand)
        pad = tok.pad_token_id
        cand_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in cand])
        cand_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in cand])
        out: list[dict[str, float]] = []
        chunk = max(1, 256 // k)  # prompt rows per pass: the shared cache is copied k times
        texts = self._prompt_texts(group, tok, prefix)
        for start in range(0, len(texts), chunk):
            enc = tok(texts[start : start + chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            mask = enc["attention_mask"]
            b = mask.shape[0]
            ids = cand_ids.repeat(b, 1)  # [b*k, width]
            with self._compute():
                head_logits, cont_logits = _heads_then_tails(model, enc["input_ids"], mask, ids, cand_mask.repeat(b, 1), k)
                first_lp = torch.log_softmax(head_logits.float(), dim=-1)  # [b, vocab]
                lp = torch.log_softmax(cont_logits.float(), dim=-1)  # [b*k, width, vocab]
            total = first_lp.repeat_interleave(k, dim=0).gather(1, ids[:, :1]).squeeze(1)
            if width > 1:
                nxt = lp[:, :-1, :].gather(2, ids[:, 1:, None]).squeeze(2) * cand_mask[None, :, 1:].expand(b, -1, -1).reshape(b * k, -1)
                total = total + nxt.sum(dim=1)
            total = total.view(b, k)
            out.extend({c: float(v) for c, v in zip(candidates, row.tolist())} for row in total)
        return out


def _heads_then_tails(model, head_ids, head_mask, tail_ids, tail_mask, k: int):
    """Each left-padded head runs once; its KV cache is copied k times and its k right-padded tails run on
    the copies (rows head0-tail0..head0-tail(k-1), head1-tail0...). Returns the logits at each head's last
    token [b, vocab] and the tails' logits [b*k, width, vocab]. What whole-label scoring (one prompt, 32
    labels) and shared-prefix scoring (one data block, 5 dimension prompts) both are."""
    import torch

    pos = (head_mask.cumsum(-1) - 1).clamp(min=0)
    first = model(input_ids=head_ids, attention_mask=head_mask, position_ids=pos, use_cache=True)
    cache = first.past_key_values
    cache.batch_repeat_interleave(k)
    mask = torch.cat([head_mask.repeat_interleave(k, dim=0), tail_mask], dim=1)
    tpos = head_mask.sum(-1).repeat_interleave(k)[:, None] + torch.arange(tail_ids.shape[1])[None, :]
    out = model(input_ids=tail_ids, attention_mask=mask, position_ids=tpos, past_key_values=cache)
    return first.logits[:, -1, :], out.logits


class _RowSampler:
    """A logits processor that picks each row's next token with that row's own sampling parameters.

    Greedy rows take the argmax; sampled rows apply temperature and top_p and draw with their own
    `torch.Generator` (seeded rows from their seed, unseeded ones from fresh entropy). The chosen token
    keeps its score and every other is set to -inf, so generate's greedy step takes exactly that pick.
    """

    def __init__(self, params: Sequence[SamplingParams]):
        import torch

        self.temps = [p.temperature for p in params]
        self.top_ps = [p.top_p for p in params]
        self.generators = []
        for p in params:
            if p.temperature > 0:
                g = torch.Generator()
                g.manual_seed(p.seed if p.seed is not None else random.SystemRandom().randrange(2**63))
                self.generators.append(g)
            else:
                self.generators.append(None)

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        picks = scores.argmax(dim=-1)
        for i, g in enumerate(self.generators):
            if g is None:
                continue
            probs = torch.softmax(scores[i] / self.temps[i], dim=-1)
            if self.top_ps[i] < 1.0:
                sorted_p, order = probs.sort(descending=True)
                drop = sorted_p.cumsum(-1) - sorted_p > self.top_ps[i]  # keep the smallest set reaching top_p
                sorted_p[drop] = 0.0
                probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
            picks[i] = torch.multinomial(probs, 1, generator=g)[0]
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(1, picks[:, None], 0.0)
        return forced


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
