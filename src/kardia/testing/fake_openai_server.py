"""FAKE OpenAI-compatible server for tests and benchmarks (named as a fake: it is no model).

It speaks the real HTTP protocol of `/v1/chat/completions` and `/v1/models` (FastAPI + uvicorn on
127.0.0.1), so clients under test are the real ones. It can:
- answer through a `responder(messages, body) -> str` callable (scripted behaviour),
- add a fixed latency per request and cap concurrent requests (`capacity`), to measure throughput,
- inject faults by request number: "500", "429" (with Retry-After), any other status code such as
  "400", "hang" (no answer until `hang_s` passes, then a 504; never counted as completed), "badjson"
  (a truncated JSON body with status 200), "drop" (the connection closes mid-body).
`stats.requests` counts every request that reached the handler and `stats.completed` every completion
sent, so a client's accounting can be checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

# imported at module level: FastAPI resolves the handler's `Request` annotation (a string under
# `from __future__ import annotations`) in the module globals; a local import makes it a query field (422)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

Responder = Callable[[list, dict], str]


def echo_responder(messages: list, body: dict) -> str:
    return "echo: " + str(messages[-1].get("content", ""))[:200]


@dataclass
class FakeServerStats:
    requests: int = 0
    completed: int = 0
    faults: Counter = field(default_factory=Counter)
    max_in_flight: int = 0
    in_flight: int = 0
    busy_seconds: float = 0.0  # sum over requests of time spent holding a capacity slot
    bodies: list = field(default_factory=list)
    arrivals: list = field(default_factory=list)  # time.monotonic() of each request, in order


class FakeOpenAIServer:
    def __init__(
        self,
        responder: Responder = echo_responder,
        latency_s: float = 0.0,
        capacity: int | None = None,
        faults: dict[int, str] | Callable[[int, dict], str | None] | None = None,
        retry_after_s: float = 0.05,
        hang_s: float = 30.0,
        model_name: str = "fake-model",
        record_bodies: bool = False,
    ):
        self.responder = responder
        self.latency_s = latency_s
        self.capacity = capacity
        self.faults = faults or {}
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.model_name = model_name
        self.record_bodies = record_bodies
        self.stats = FakeServerStats()
        self._lock = threading.Lock()
        self.port = _free_port()
        self._server = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def model_string(self) -> str:
        return f"openai:{self.model_name}@{self.base_url}"

    def _fault_for(self, n: int, body: dict) -> str | None:
        if callable(self.faults):
            return self.faults(n, body)
        return self.faults.get(n)

    def _app(self):
        app = FastAPI()
        sem = asyncio.Semaphore(self.capacity) if self.capacity else None
        server = self

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": server.model_name, "object": "model", "owned_by": "fake"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            with server._lock:
                server.stats.requests += 1
                n = server.stats.requests
                server.stats.arrivals.append(time.monotonic())
                if server.record_bodies:
                    server.stats.bodies.append(body)
            fault = server._fault_for(n, body)
            if fault:
                with server._lock:
                    server.stats.faults[fault] += 1
            if fault == "429":
                return JSONResponse(
                    {"error": {"message": "injected 429"}},
                    status_code=429,
                    headers={"Retry-After": str(server.retry_after_s)},
                )
            if fault and fault.isdigit():
                return JSONResponse({"error": {"message": f"injected {fault}"}}, status_code=int(fault))
            if fault == "hang":
                deadline = time.monotonic() + server.hang_s
                while time.monotonic() < deadline and not server._stopping.is_set():
                    await asyncio.sleep(0.02)
                return JSONResponse({"error": {"message": "injected hang ended"}}, status_code=504)
            if fault == "badjson":
                return Response(content=b'{"id": "x", "choices": [ {', media_type="application/json")
            if fault == "drop":
                async def broken():
                    yield b'{"id": "chatcmpl-x", "object": "chat.completion", '
                    raise ConnectionResetError("injected drop")

                return StreamingResponse(broken(), media_type="application/json")

            async def work():
                t0 = time.monotonic()
                with server._lock:
                    server.stats.in_flight += 1
                    server.stats.max_in_flight = max(server.stats.max_in_flight, server.stats.in_flight)
                try:
                    if server.latency_s:
                        await asyncio.sleep(server.latency_s)
                    text = server.responder(body.get("messages", []), body)
                finally:
                    with server._lock:
                        server.stats.in_flight -= 1
                        server.stats.busy_seconds += time.monotonic() - t0
                return text

            if sem is not None:
                async with sem:
                    text = await work()
            else:
                text = await work()
            with server._lock:
                server.stats.completed += 1
            words = text.split()
            return {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": server.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])),
                    "completion_tokens": len(words),
                    "total_tokens": 0,
                },
            }

        return app

    def start(self) -> "FakeOpenAIServer":
        import uvicorn

        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not getattr(self._server, "started", False):
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def json_responder(obj) -> Responder:
    """A responder that always answers with the JSON dump of `obj`."""
    text = json.dumps(obj)
    return lambda messages, body: text
