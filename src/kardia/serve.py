"""`kardia serve MODEL`: an OpenAI-compatible endpoint for a four-span model, crisis guard always on.

Built on FastAPI + uvicorn (no hand-written HTTP); generation goes through `kardia.llm.load_llm`, whose
local backend batches concurrent requests into one `generate` call.

What clients get:
- `content` is only the response span (`kardia.spans.visible_response`): never the understanding or
  the reasoning. The emotion travels in `choices[i].kardia` (and `message.kardia`); with
  `--expose-spans` the other spans too.
- Every request's last user message (with its history) passes the crisis guard first. At risk, the
  reply is the policy's safe reply and the model is not called, so it cannot override it (the order of
  these steps is `kardia.guarded`, shared with `kardia chat`).
- Requests longer than the model's context get a 400 in OpenAI's error format (a remote `openai:`
  model with `--max-context`: checked on an estimate, ~4 characters a token).
- Hostile input: every bad request is a 4xx in OpenAI's `{"error": {...}}` shape (bodies over
  `max_body_bytes` a 413, read no further); the guard's patterns and the token count run in worker
  threads, so a long message never stalls `/health` or other clients. The guard's patterns take ~4 s of
  CPU per MiB in pure Python, which in a thread still holds the GIL the event loop needs: a guard check
  of more than `guard_process_chars` characters runs in a separate, lower-priority process instead, so a
  client sending long messages slows only its own requests (benchmarks/serve_load.py). A large body
  (over `LARGE_BODY_BYTES`) is also parsed and validated in a worker thread, not in the event loop.

Streaming (`stream=true`): we generate the whole answer, then stream the visible response in
OpenAI-format chunks. Why not stream tokens: the response span comes last (understanding, reasoning
and emotion precede it), so buffering until it opens saves only the ~30 response tokens of a ~150
token answer; time to first visible word is almost the same. Generating first also means the output
check (no method content) runs before a single word is shown, errors arrive as proper HTTP errors
instead of a stream cut halfway, and the local backend can keep batching whole generations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import re
import time
import uuid
from pathlib import Path
from typing import Any, Optional

import typer

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request  # module level: FastAPI resolves the endpoint's annotation here

from .config import KardiaConfig, OptionalModel, ConfigError, fail
from .llm.options import LLMOptions
from . import guarded
from .llm import LLMError, SamplingParams, load_llm, parse_model_string
from .safety import Guard, LocaleError
from .prompts import PromptProfile


class ServeConfig(KardiaConfig):
    model: str = "embedded"
    host: str = "127.0.0.1"
    port: int = 8000
    locale: Optional[str] = None  # crisis resources; the shipped default is NOT localised
    expose_spans: bool = False
    log_crisis_text: bool = False
    crisis_log: Optional[str] = None  # JSONL file of guard events (no message text unless log_crisis_text)
    guard_model: OptionalModel = None  # optional model-based safety check (none/off: none)
    semantic_guard: bool = False  # the guard's embedding layer (opt-in: measured weak, see kardia.safety.semantic)
    learned_guard: Optional[bool] = None  # the guard's learned layer (None: on unless KARDIA_SAFETY_LEARNED=0)
    max_batch: int = 8
    max_tokens: int = 256  # when the client sends none
    temperature: float = 0.7
    max_context: Optional[int] = None  # override the model's context length (local models read it)
    served_name: Optional[str] = None  # the id in /v1/models (default: the model string)
    stream_chunk_words: int = 3
    max_body_bytes: int = Field(1_048_576, ge=1024)  # larger request bodies get a 413, unread
    # guard checks of more characters (message + history) run in a separate process (0: never)
    guard_process_chars: int = Field(16_384, ge=0)
    llm_options: LLMOptions = Field(default_factory=LLMOptions)  # timeout, retries of a remote model


class ChatRequest(BaseModel):
    """The OpenAI chat request fields we read; extra fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Any]  # each checked by `_messages`, with its index in the error
    stream: bool = False
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    seed: Optional[int] = None
    stop: Optional[str | list[str]] = None
    n: Optional[int] = 1
    stream_options: Optional[dict] = None
    kardia: Optional[dict] = None  # {"profile": str, "situation": str}


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status, content={"error": {"message": message, "type": type_, "param": param, "code": code}}
    )


class _Reject(Exception):
    """A request answered with an OpenAI-shaped error instead of a completion."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        type_: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type_ = status, message, param, code, type_


_SURROGATE = re.compile("[\ud800-\udfff]")
CHARS_PER_TOKEN = 4  # the estimate for remote models, whose tokenizer the server does not have
LARGE_BODY_BYTES = 65_536  # bodies over this are parsed and validated in a worker thread
# A request CERTAINLY over the context (its lower bound of tokens is) is answered before any full pass
# over its text: the guard's patterns (its deterministic layers, not the encoder or a guard model) read a
# window of this many characters of the last message (head and tail), so an explicit crisis statement
# still gets the safe reply, and anything else gets its 400 within 100 ms, not the seconds a 1 MiB text
# costs the guard and the tokenizer (the patterns take ~10 ms per 1,000 characters on a busy core).
OVERLONG_GUARD_WINDOW_CHARS = 4_000
TEMPLATE_TOKENS_PER_MESSAGE = 3  # ChatML: <|im_start|>, the role, <|im_end|> at the least


def _text_of(content: Any, where: str) -> str:
    """OpenAI content is a string or a list of text parts; anything else is the client's error."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _Reject(400, f"{where}.content: must be a string or a list of text parts, got {_json_type(content)}", param=where)
    texts = []
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise _Reject(400, f"{at}: must be an object like {{\"type\": \"text\", \"text\": \"...\"}}, got {_json_type(part)}", param=where)
        if part.get("type", "text") != "text":
            raise _Reject(400, f"{at}.type: only text parts are supported, got {str(part.get('type'))[:40]!r}", param=where)
        if not isinstance(part.get("text"), str):
            raise _Reject(400, f"{at}.text: must be a string, got {_json_type(part.get('text'))}", param=where)
        texts.append(part["text"])
    return "".join(texts)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def _messages(raw: list, start: int = 0) -> list[dict]:
    """The request's messages as {role, content} text, each checked; lone surrogates (a valid JSON
    escape that cannot be encoded again) become U+FFFD. `start`: the index of raw[0] in the request."""
    out = []
    for i, m in enumerate(raw, start):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _Reject(400, f"{where}: must be an object with role and content, got {_json_type(m)}", param="messages")
        role = m.get("role")
        if role not in ("system", "user", "assistant"):
            raise _Reject(400, f"{where}.role: must be system, user or assistant", param="messages")
        if m.get("content") is None:
            if role != "assistant":  # an assistant turn may carry only tool calls; a user turn says something
                raise _Reject(400, f"{where}.content: a {role} message needs content", param="messages")
            text = ""
        else:
            text = _text_of(m["content"], where)
        out.append({"role": role, "content": text if text.isascii() else _SURROGATE.sub("\ufffd", text)})
    return out


def _context_exceeded(max_context: int, n_prompt: int, max_tokens: int, qualifier: str = "") -> "_Reject":
    """OpenAI's context-length 400; `qualifier` says how the prompt's tokens are known ("about", "at least")."""
    q = f"{qualifier} " if qualifier else ""
    return _Reject(
        400,
        f"This model's maximum context length is {max_context} tokens. However, you requested "
        f"{q}{n_prompt + max_tokens} tokens ({q}{n_prompt} in the messages, {max_tokens} in the "
        "completion). Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
    )


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, read no further than `limit` bytes (declared or streamed)."""
    too_big = f"the request body is over this server's limit of {limit} bytes (max_body_bytes)"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _Reject(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise _Reject(413, too_big, code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Reject(413, too_big, code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> dict:
    """The body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject(400, f"the request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise _Reject(400, f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:
        raise _Reject(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Reject(400, f"the request body must be a JSON object, got {_json_type(data)}")
    return data


def _parse_request(raw: bytes, max_messages: int | None = None) -> tuple[ChatRequest, list[dict], int]:
    """(the validated request, its checked messages, how many leading messages were left unread); a
    _Reject for anything a client got wrong. Over `max_messages` messages a request is certainly over the
    context (their template tokens alone are): only the last message is read, for the guard, since
    checking 30,000 messages costs more than the 100 ms a bad request may take."""
    body = _parse_json(raw)
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e.get("loc", []))
        raise _Reject(400, f"field {loc or 'body'}: {e.get('msg')}", param=loc or None) from None
    unread = len(req.messages) - 1 if max_messages is not None and len(req.messages) > max_messages else 0
    return req, _messages(req.messages[unread:], start=unread), unread


class _Engine:
    """The model, its tokenizer (for the context check) and the guard, shared by all requests."""

    def __init__(self, cfg: ServeConfig, llm: Any = None):
        self.cfg = cfg
        self.spec = parse_model_string(cfg.model)
        self.name = cfg.served_name or self.spec.display
        self.local = self.spec.kind in ("embedded", "local")
        options = {"max_batch": cfg.max_batch} if self.local else {"max_concurrency": cfg.max_batch}
        options.update(cfg.llm_options.for_model(cfg.model))
        self.llm = llm if llm is not None else load_llm(cfg.model, cache=False, **options)

        self.prompt = PromptProfile.for_model(cfg.model)  # the prompt a Kardia-trained model was trained with
        self.guard = Guard(
            locale_file=cfg.locale,
            log_text=cfg.log_crisis_text,
            model=cfg.guard_model,
            log_file=cfg.crisis_log,
            semantic=cfg.semantic_guard,
            learned=cfg.learned_guard,
        )
        self.tokenizer = None
        self.max_context = cfg.max_context
        if self.local:
            from transformers import AutoConfig, AutoTokenizer

            from .llm import resolve_model_path

            path = resolve_model_path(cfg.model)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            if self.max_context is None:
                mc = AutoConfig.from_pretrained(path)
                self.max_context = int(getattr(mc, "max_position_embeddings", 0) or 0) or None
        self.created = int(time.time())
        self._guard_pool = None
        self.guard_offloaded = 0  # guard checks run in the guard process

    async def check(self, message: str, history: list[dict], request_id: str, patterns_only: bool = False):
        """The guard's assessment; a long text is checked in the guard process (see the module doc)."""
        from concurrent.futures.process import BrokenProcessPool

        size = len(message) + sum(len(m["content"]) for m in history)
        limit = self.cfg.guard_process_chars
        if not limit or size <= limit:
            return await self.guard.acheck(message, history, request_id=request_id, patterns_only=patterns_only)
        self.guard_offloaded += 1
        try:
            return await self.guard.acheck(
                message, history, request_id=request_id, executor=self._pool(), patterns_only=patterns_only
            )
        except BrokenProcessPool:  # the process died (killed, out of memory): a new one next time, a thread now
            import logging

            logging.getLogger("kardia.serve").warning("the guard process died; checking this request in a thread")
            self.close()
            return await self.guard.acheck(message, history, request_id=request_id, patterns_only=patterns_only)

    def _pool(self):
        if self._guard_pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            from .safety.assess import guard_process_init

            self._guard_pool = ProcessPoolExecutor(
                max_workers=1, mp_context=mp.get_context("spawn"), initializer=guard_process_init,
                initargs=(self.guard.patterns,),
            )
        return self._guard_pool

    def close(self) -> None:
        pool, self._guard_pool = self._guard_pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def min_tokens(self, conversation: list[dict]) -> int:
        """A lower bound on the prompt's tokens, from characters alone (no tokenizer pass over the text):
        no token of the model's vocabulary spans more than `max_token_chars` characters."""
        chars = sum(len(m["content"]) for m in conversation)
        return math.ceil(chars / self.max_token_chars) + TEMPLATE_TOKENS_PER_MESSAGE * len(conversation)

    @functools.cached_property
    def max_token_chars(self) -> int:
        if self.tokenizer is None:
            return 4 * CHARS_PER_TOKEN  # remote: no vocabulary here; 4x the usual estimate, still a bound in practice
        tok = self.tokenizer
        return max(1, max(len(tok.convert_tokens_to_string([t])) for t in tok.get_vocab()))

    def count_tokens(self, conversation: list[dict]) -> tuple[int, bool]:
        """(prompt tokens, estimated): counted with a local model's tokenizer; for a remote model,
        estimated from the characters (`CHARS_PER_TOKEN`) plus a few tokens of template per message."""
        if self.tokenizer is None:
            chars = sum(len(m["content"]) for m in conversation)
            return math.ceil(chars / CHARS_PER_TOKEN) + 4 * len(conversation), True
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]), False


def create_app(cfg: ServeConfig, llm: Any = None):
    """The FastAPI app (tests run it in-thread with uvicorn; `kardia serve` runs it with uvicorn.run)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from fastapi.responses import JSONResponse, StreamingResponse

    engine = _Engine(cfg, llm)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            engine.close()

    app = FastAPI(title="kardia serve", version="1", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request, exc: RequestValidationError):
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e.get("loc", []) if x != "body")
        return _error(400, f"field {loc or 'body'}: {e.get('msg')}", param=loc or None)

    @app.exception_handler(_Reject)
    async def _rejected(request, exc: _Reject):
        return _error(exc.status, exc.message, type_=exc.type_, param=exc.param, code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):  # 404, 405: OpenAI's shape, not {"detail"}
        return _error(exc.status_code, str(exc.detail), type_="invalid_request_error" if exc.status_code < 500 else "server_error")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):  # a bug: an error the client can read, no traceback
        import logging

        logging.getLogger("kardia.serve").exception("unexpected error")
        return _error(500, f"internal error ({type(exc).__name__})", type_="server_error", code="internal_error")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "guard": "on", "locale": engine.guard.locale.name}

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": engine.name, "object": "model", "created": engine.created, "owned_by": "kardia"}],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        raw = await _read_body(request, cfg.max_body_bytes)
        # a large body (a 1 MiB message, 30,000 messages) takes ~0.1 s to parse: not in the event loop
        max_messages = engine.max_context // TEMPLATE_TOKENS_PER_MESSAGE if engine.max_context else None
        req, msgs, unread = (
            await asyncio.to_thread(_parse_request, raw, max_messages)
            if len(raw) > LARGE_BODY_BYTES
            else _parse_request(raw, max_messages)
        )
        if req.model != engine.name:
            return _error(404, f"The model '{req.model}' does not exist; this server serves '{engine.name}'.", param="model", code="model_not_found")
        if (req.n or 1) != 1:
            return _error(400, "only n=1 is supported", param="n")
        if not msgs or msgs[-1]["role"] != "user":
            return _error(400, "the last message must come from the user", param="messages")
        client_system = [m for m in msgs if m["role"] == "system"]
        dialogue = [m for m in msgs if m["role"] != "system"]
        extra = req.kardia or {}
        if client_system and (extra.get("profile") or extra.get("situation")):
            return _error(400, "give either a system message or kardia.profile/kardia.situation, not both", param="kardia")
        system = (
            "\n\n".join(m["content"] for m in client_system)
            if client_system
            else engine.prompt.render(str(extra.get("profile") or ""), str(extra.get("situation") or ""))
        )
        conversation = [{"role": "system", "content": system}, *dialogue]
        max_tokens = req.max_completion_tokens or req.max_tokens or cfg.max_tokens
        if max_tokens < 1:
            return _error(400, "max_tokens must be at least 1", param="max_tokens")
        # a request CERTAINLY over the context: the guard reads a window (a person in crisis still gets
        # the safe reply), and anything else gets its 400 without a full pass over the text
        floor = engine.min_tokens(conversation) + TEMPLATE_TOKENS_PER_MESSAGE * unread if engine.max_context else 0
        overlong = bool(engine.max_context) and floor + max_tokens > engine.max_context

        async def check(message: str, history: list[dict]):
            if overlong:
                half = OVERLONG_GUARD_WINDOW_CHARS // 2
                window = message if len(message) <= 2 * half else message[:half] + "\n" + message[-half:]
                return await engine.check(window, [], request_id=rid, patterns_only=True)
            return await engine.check(message, history, request_id=rid)

        async def generate():
            if overlong:
                raise _context_exceeded(engine.max_context, floor, max_tokens, "at least")
            n_prompt, estimated = await asyncio.to_thread(engine.count_tokens, conversation)
            if engine.max_context and n_prompt + max_tokens > engine.max_context:
                raise _context_exceeded(engine.max_context, n_prompt, max_tokens, "about" if estimated else "")
            stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
            params = SamplingParams(
                max_tokens=max_tokens,
                temperature=cfg.temperature if req.temperature is None else req.temperature,
                top_p=1.0 if req.top_p is None else req.top_p,
                seed=req.seed,
                stop=stop,
            )
            try:
                return (await engine.llm.agenerate([conversation], params))[0]
            except LLMError as exc:
                raise _Reject(502, f"the model failed: {exc}", type_="server_error", code="model_error") from None

        async def check_output(visible: str):
            return await asyncio.to_thread(engine.guard.check_output, visible, request_id=rid)

        turn = await guarded.areply(
            dialogue[-1]["content"], dialogue[:-1],
            check=check, crisis_reply=engine.guard.crisis_reply, generate=generate, check_output=check_output,
        )
        a = turn.assessment
        safety = {"at_risk": a.at_risk, "category": a.category, "level": a.level}
        content = turn.shown
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        if turn.completion is None:  # the guard fired: the model was not called
            info: dict[str, Any] = {"emotion": None, "guarded": True, "safety": safety}
        else:
            parsed, completion = turn.parsed, turn.completion
            info = {
                "emotion": turn.emotion,
                "emotion_raw": parsed.emotion,
                "spans_ok": parsed.ok,
                "guarded": turn.output_replaced,
                "safety": safety,
            }
            if cfg.expose_spans:
                info["spans"] = parsed.as_dict()
            usage = {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            }
        created = int(time.time())
        if not req.stream:
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": engine.name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content, "kardia": info},
                            "finish_reason": "stop",
                            "kardia": info,
                        }
                    ],
                    "usage": usage,
                }
            )
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            _sse(rid, created, engine.name, content, info, usage, include_usage, cfg.stream_chunk_words),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def _chunks(text: str, words: int) -> list[str]:
    """Pieces of a few words each, whitespace kept, so joining them gives the text back exactly."""
    import re

    tokens = re.findall(r"\S+\s*|\s+", text)
    return ["".join(tokens[i : i + words]) for i in range(0, len(tokens), max(1, words))] or [""]


async def _sse(rid, created, model, content, info, usage, include_usage, words):
    def event(choices, **extra) -> str:
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    for piece in _chunks(content, words):
        yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
    yield event([{"index": 0, "delta": {}, "finish_reason": "stop", "kardia": info}])
    if include_usage:
        yield event([], usage=usage)
    yield "data: [DONE]\n\n"


def run_server(cfg: ServeConfig) -> None:
    import uvicorn

    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        model: str = typer.Argument(..., help="Model string: embedded, a local folder, or openai:MODEL@URL."),
        host: Optional[str] = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
        port: Optional[int] = typer.Option(None, help="Port (default 8000)."),
        locale: Optional[Path] = typer.Option(None, "--locale", help="Crisis resources file (see resources/safety/locale/)."),
        expose_spans: Optional[bool] = typer.Option(None, "--expose-spans/--no-expose-spans", help="Also return understanding and reasoning."),
        log_crisis_text: Optional[bool] = typer.Option(None, "--log-crisis-text/--no-log-crisis-text", help="Log message text with crisis events (off by default)."),
        crisis_log: Optional[Path] = typer.Option(None, "--crisis-log", help="Append guard events to this JSONL file."),
        guard_model: Optional[str] = typer.Option(None, "--guard-model", help="Model string for the optional model-based safety check."),
        semantic_guard: Optional[bool] = typer.Option(None, "--semantic-guard/--no-semantic-guard", help="Add the guard's embedding layer (default off)."),
        learned_guard: Optional[bool] = typer.Option(None, "--learned-guard/--no-learned-guard", help="The guard's learned layer (default on)."),
        max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Most requests generated together (default 8)."),
        max_context: Optional[int] = typer.Option(None, "--max-context", help="Override the model's context length."),
        served_name: Optional[str] = typer.Option(None, "--served-name", help="Model id clients use (default: the model string)."),
        max_body_bytes: Optional[int] = typer.Option(None, "--max-body-bytes", help="Larger request bodies get a 413 (default 1 MiB)."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML config (ServeConfig)."),
        set_: list[str] = typer.Option([], "--set", help="Override a config key: key=value (repeatable)."),
    ) -> None:
        """Serve MODEL over an OpenAI-compatible API: response span only, crisis guard on every request."""
        options = {
            "model": model, "host": host, "port": port, "locale": locale, "expose_spans": expose_spans,
            "log_crisis_text": log_crisis_text, "crisis_log": crisis_log, "guard_model": guard_model,
            "semantic_guard": semantic_guard, "learned_guard": learned_guard, "max_batch": max_batch,
            "max_context": max_context, "served_name": served_name, "max_body_bytes": max_body_bytes,
        }

        try:
            cfg = ServeConfig.from_cli(config, set_, options)
            run_server(cfg)
        except (ConfigError, LocaleError) as exc:
            fail(exc)
